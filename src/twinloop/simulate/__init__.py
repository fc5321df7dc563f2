"""The engine: batched integration of one model over many virtual patients."""

from twinloop.simulate.engine import SOLVERS as SOLVERS
from twinloop.simulate.engine import SimulationWarning as SimulationWarning
from twinloop.simulate.engine import SolverSettings as SolverSettings
from twinloop.simulate.engine import simulate as simulate
from twinloop.simulate.engine import simulate_chunks as simulate_chunks
from twinloop.simulate.trajectories import Trajectories as Trajectories
