"""Controllers in the loop: insulin-dosing algorithms driving virtual patients.

A controller (basal-bolus, PID, model-predictive, or a user's JAX function) runs every
control period on the sensor's readings and sets insulin through a pump model; the
whole cohort runs closed-loop in one compiled loop (``closed_loop``), each patient
with its own controller state. ``twinloop.envs`` exposes the same loop as Gymnasium
environments.
"""

from typing import TYPE_CHECKING

from twinloop._config import ensure_jax
from twinloop._lazy import attach

ensure_jax()  # before any module of this package imports JAX

if TYPE_CHECKING:
    from twinloop.control.controllers import basal_bolus as basal_bolus
    from twinloop.control.controllers import pid as pid
    from twinloop.control.evaluate import Evaluation as Evaluation
    from twinloop.control.evaluate import evaluate as evaluate
    from twinloop.control.loop import ClosedLoopResult as ClosedLoopResult
    from twinloop.control.loop import LoopPlant as LoopPlant
    from twinloop.control.loop import closed_loop as closed_loop
    from twinloop.control.mpc import mpc as mpc
    from twinloop.control.named import by_name as by_name
    from twinloop.control.patients import Patients as Patients
    from twinloop.control.product import delivered_inputs as delivered_inputs
    from twinloop.control.product import generate_product as generate_product
    from twinloop.control.pump import Pump as Pump
    from twinloop.control.scenario import RescueCarbs as RescueCarbs
    from twinloop.control.scenario import Scenario as Scenario
    from twinloop.control.types import Action as Action
    from twinloop.control.types import Controller as Controller
    from twinloop.control.types import Observation as Observation

__getattr__, __dir__, __all__ = attach(__name__, __file__)
