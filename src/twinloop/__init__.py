"""twinloop: hybrid medical digital twins.

The public names load on first use (PEP 562, see ``_lazy``), so ``import twinloop``
and ``twinloop --help`` import neither JAX nor any other heavy library.

Example:
    >>> import twinloop as tl
    >>> model = tl.models.get("t1d-uva-padova")
    >>> traj = tl.simulate(model, model.preset("adult#001"), tl.Inputs(), times=[0.0, 60.0])
"""

from typing import TYPE_CHECKING

from twinloop import _config as _config
from twinloop._lazy import attach

if TYPE_CHECKING:
    from twinloop import control as control
    from twinloop import models as models
    from twinloop import scale as scale
    from twinloop import trials as trials
    from twinloop.errors import CalibrationError as CalibrationError
    from twinloop.errors import DataError as DataError
    from twinloop.errors import InputError as InputError
    from twinloop.errors import ModelError as ModelError
    from twinloop.errors import SimulationError as SimulationError
    from twinloop.errors import TwinloopError as TwinloopError
    from twinloop.models.inputs import Inputs as Inputs
    from twinloop.simulate.engine import SolverSettings as SolverSettings
    from twinloop.simulate.engine import simulate as simulate
    from twinloop.simulate.trajectories import Trajectories as Trajectories
    from twinloop.twin.patient import PatientTwin as PatientTwin

__version__ = "0.1.0"
__getattr__, __dir__, __all__ = attach(__name__, __file__, defined=("__version__",))
