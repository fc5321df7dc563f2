"""Assimilation methods, chosen by name: ``enkf``, ``etkf``, ``pf``.

``assimilator(name)`` gives each with its defaults (no inflation, no localization; the
particle filter resamples below half the ensemble and regularizes); construct the classes
to tune them, e.g. ``ETKF(inflation="adaptive", rotate=True)``.
"""

from twinloop.errors import InputError
from twinloop.twin.assimilation.base import AbstractAssimilator as AbstractAssimilator
from twinloop.twin.assimilation.base import Innovation as Innovation
from twinloop.twin.assimilation.base import innovation as innovation
from twinloop.twin.assimilation.base import systematic_resample as systematic_resample
from twinloop.twin.assimilation.enkf import ETKF as ETKF
from twinloop.twin.assimilation.enkf import AbstractEnsembleKalmanFilter as AbstractEnsembleKalmanFilter
from twinloop.twin.assimilation.enkf import StochasticEnKF as StochasticEnKF
from twinloop.twin.assimilation.inflation import enkf_n_inflation as enkf_n_inflation
from twinloop.twin.assimilation.inflation import mean_preserving_random_rotation as mean_preserving_random_rotation
from twinloop.twin.assimilation.localization import gaspari_cohn as gaspari_cohn
from twinloop.twin.assimilation.particle import ParticleFilter as ParticleFilter

METHODS = {"enkf": StochasticEnKF, "etkf": ETKF, "pf": ParticleFilter}


def assimilator(
    name: str,
    *,
    inflation: float | str = 1.0,
    rotate: bool = False,
    resample_below: float = 0.5,
    regularization: float = 1.0,
) -> AbstractAssimilator:
    """The named filter with its options (the Kalman filters take ``inflation`` and, the
    ETKF, ``rotate``; the particle filter ``resample_below`` and ``regularization``)."""
    if name not in METHODS:
        raise InputError(f"Unknown assimilation method {name!r}; choose one of {sorted(METHODS)}.")
    if name == "pf":
        return ParticleFilter(resample_below, regularization)
    if name == "etkf":
        return ETKF(inflation, rotate=rotate)  # type: ignore[arg-type]
    return StochasticEnKF(inflation)  # type: ignore[arg-type]
