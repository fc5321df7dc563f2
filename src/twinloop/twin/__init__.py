"""Closed loop: patient twins, assimilation, drift detection, forecasts and what-if comparison."""

from twinloop.twin.assimilation import ETKF as ETKF
from twinloop.twin.assimilation import ParticleFilter as ParticleFilter
from twinloop.twin.assimilation import StochasticEnKF as StochasticEnKF
from twinloop.twin.drift import DriftDetector as DriftDetector
from twinloop.twin.endpoints import endpoint as endpoint
from twinloop.twin.ensemble import Ensemble as Ensemble
from twinloop.twin.forecast import Forecast as Forecast
from twinloop.twin.patient import PatientTwin as PatientTwin
from twinloop.twin.patient import SyncReport as SyncReport
from twinloop.twin.patient import TwinConfig as TwinConfig
from twinloop.twin.synthetic import synthetic_record as synthetic_record
