"""Model specification, the registry of built-in cores, and the model contract."""

from typing import TYPE_CHECKING

from twinloop._config import ensure_jax
from twinloop._lazy import attach

ensure_jax()  # before any module of this package imports JAX

if TYPE_CHECKING:
    from twinloop.models import pk as pk
    from twinloop.models import pk_one_compartment as pk_one_compartment
    from twinloop.models import pk_two_compartment as pk_two_compartment
    from twinloop.models import radiotherapy as radiotherapy
    from twinloop.models import sbml as sbml
    from twinloop.models import t1d_uva_padova as t1d_uva_padova
    from twinloop.models import tgi_claret as tgi_claret
    from twinloop.models import tgi_simeoni as tgi_simeoni
    from twinloop.models import tgi_stein as tgi_stein
    from twinloop.models.base import Input as Input
    from twinloop.models.base import Model as Model
    from twinloop.models.base import Observable as Observable
    from twinloop.models.base import Parameter as Parameter
    from twinloop.models.base import State as State
    from twinloop.models.check import CheckResult as CheckResult
    from twinloop.models.check import check_model as check_model
    from twinloop.models.inputs import Inputs as Inputs
    from twinloop.models.registry import available as available
    from twinloop.models.registry import get as get
    from twinloop.models.registry import register as register
    from twinloop.models.t1d_cgm import CGMSensor as CGMSensor

__getattr__, __dir__, __all__ = attach(__name__, __file__)
