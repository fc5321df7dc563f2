"""twinloop: hybrid medical digital twins.

Example:
    >>> import twinloop as tl
    >>> model = tl.models.get("t1d-uva-padova")
    >>> traj = tl.simulate(model, model.preset("adult#001"), tl.Inputs(), times=[0.0, 60.0])
"""

from twinloop import _config as _config
from twinloop import models as models
from twinloop.errors import CalibrationError as CalibrationError
from twinloop.errors import DataError as DataError
from twinloop.errors import InputError as InputError
from twinloop.errors import ModelError as ModelError
from twinloop.errors import SimulationError as SimulationError
from twinloop.errors import TwinloopError as TwinloopError
from twinloop.models.inputs import Inputs as Inputs
from twinloop.simulate import SolverSettings as SolverSettings
from twinloop.simulate import Trajectories as Trajectories
from twinloop.simulate import simulate as simulate
from twinloop.twin.patient import PatientTwin as PatientTwin

__version__ = "0.1.0"
