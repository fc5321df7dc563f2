"""Closed loop: patient twins, assimilation, drift detection, forecasts and what-if comparison."""

from typing import TYPE_CHECKING

from twinloop._config import ensure_jax
from twinloop._lazy import attach

ensure_jax()  # before any module of this package imports JAX

if TYPE_CHECKING:
    from twinloop.twin.assimilation import ETKF as ETKF
    from twinloop.twin.assimilation import ParticleFilter as ParticleFilter
    from twinloop.twin.assimilation import StochasticEnKF as StochasticEnKF
    from twinloop.twin.compare import Comparison as Comparison
    from twinloop.twin.config import TwinConfig as TwinConfig
    from twinloop.twin.drift import DriftDetector as DriftDetector
    from twinloop.twin.endpoints import endpoint as endpoint
    from twinloop.twin.ensemble import Ensemble as Ensemble
    from twinloop.twin.forecast import Forecast as Forecast
    from twinloop.twin.heldout import HeldoutCheck as HeldoutCheck
    from twinloop.twin.heldout import heldout_check as heldout_check
    from twinloop.twin.identify import IdentifySettings as IdentifySettings
    from twinloop.twin.patient import PatientTwin as PatientTwin
    from twinloop.twin.patient import SyncReport as SyncReport
    from twinloop.twin.registered import RegisteredTwins as RegisteredTwins
    from twinloop.twin.repository import TwinChange as TwinChange
    from twinloop.twin.repository import TwinRepository as TwinRepository
    from twinloop.twin.synthetic import synthetic_record as synthetic_record

__getattr__, __dir__, __all__ = attach(__name__, __file__)
