"""Model specification, the registry (built-in cores, the user's model directory, plugins), and the model contract."""

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
    from twinloop.models import treatments as treatments
    from twinloop.models.base import Input as Input
    from twinloop.models.base import Model as Model
    from twinloop.models.base import Observable as Observable
    from twinloop.models.base import Parameter as Parameter
    from twinloop.models.base import State as State
    from twinloop.models.inputs import Inputs as Inputs
    from twinloop.models.noise import NoiseModel as NoiseModel
    from twinloop.models.noise import noise_for as noise_for
    from twinloop.models.profile import ClosureFeature as ClosureFeature
    from twinloop.models.profile import ClosureSpec as ClosureSpec
    from twinloop.models.profile import ContextOfUse as ContextOfUse
    from twinloop.models.profile import FastPath as FastPath
    from twinloop.models.profile import ModelProfile as ModelProfile
    from twinloop.models.profile import ReferenceCase as ReferenceCase
    from twinloop.models.profile import Treatment as Treatment
    from twinloop.models.profile import ValidationReference as ValidationReference
    from twinloop.models.profile import closed_form as closed_form
    from twinloop.models.registry import ModelSource as ModelSource
    from twinloop.models.registry import available as available
    from twinloop.models.registry import get as get
    from twinloop.models.registry import register as register
    from twinloop.models.registry import source as source
    from twinloop.models.t1d_cgm import CGMSensor as CGMSensor
    from twinloop.models.user import models_dir as models_dir
    from twinloop.testing import CheckResult as CheckResult  # kept here as a lazy alias
    from twinloop.testing import check_model as check_model

__getattr__, __dir__, __all__ = attach(__name__, __file__)
