"""The engine: batched integration of one model over many virtual patients."""

from typing import TYPE_CHECKING

from twinloop._config import ensure_jax
from twinloop._lazy import attach

ensure_jax()  # before any module of this package imports JAX

if TYPE_CHECKING:
    from twinloop.simulate.engine import COHORT_SOLVER as COHORT_SOLVER
    from twinloop.simulate.engine import SOLVERS as SOLVERS
    from twinloop.simulate.engine import SimulationWarning as SimulationWarning
    from twinloop.simulate.engine import SolverSettings as SolverSettings
    from twinloop.simulate.engine import simulate as simulate
    from twinloop.simulate.engine import simulate_chunks as simulate_chunks
    from twinloop.simulate.trajectories import Trajectories as Trajectories

__getattr__, __dir__, __all__ = attach(__name__, __file__)
