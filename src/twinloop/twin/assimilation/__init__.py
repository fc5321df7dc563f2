"""Assimilation methods, chosen by name: ``enkf``, ``etkf``, ``pf``."""

from twinloop.errors import InputError
from twinloop.twin.assimilation.base import AbstractAssimilator as AbstractAssimilator
from twinloop.twin.assimilation.base import Innovation as Innovation
from twinloop.twin.assimilation.base import innovation as innovation
from twinloop.twin.assimilation.enkf import ETKF as ETKF
from twinloop.twin.assimilation.enkf import StochasticEnKF as StochasticEnKF
from twinloop.twin.assimilation.particle import ParticleFilter as ParticleFilter

METHODS = {"enkf": StochasticEnKF, "etkf": ETKF, "pf": ParticleFilter}


def assimilator(name: str) -> AbstractAssimilator:
    if name not in METHODS:
        raise InputError(f"Unknown assimilation method {name!r}; choose one of {sorted(METHODS)}.")
    return METHODS[name]()
