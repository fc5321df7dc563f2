"""Backward loop: Bayesian calibration of one patient (NUTS, SVI) against a population prior."""

from typing import TYPE_CHECKING

from twinloop._config import ensure_jax
from twinloop._lazy import attach

ensure_jax()  # before any module of this package imports JAX

if TYPE_CHECKING:
    from twinloop.calibrate.amortized import AmortizedPosterior as AmortizedPosterior
    from twinloop.calibrate.amortized import NPESettings as NPESettings
    from twinloop.calibrate.bayes import Calibrator as Calibrator
    from twinloop.calibrate.bayes import calibrate as calibrate
    from twinloop.calibrate.checks import SBCResult as SBCResult
    from twinloop.calibrate.checks import c2st as c2st
    from twinloop.calibrate.checks import sbc as sbc
    from twinloop.calibrate.design import ObservationDesign as ObservationDesign
    from twinloop.calibrate.noise import NoiseModel as NoiseModel
    from twinloop.calibrate.posterior import CalibrationWarning as CalibrationWarning
    from twinloop.calibrate.posterior import Posterior as Posterior
    from twinloop.calibrate.prior import GaussianPrior as GaussianPrior
    from twinloop.calibrate.problem import CalibrationProblem as CalibrationProblem
    from twinloop.calibrate.problem import ParameterMap as ParameterMap

__getattr__, __dir__, __all__ = attach(__name__, __file__)
