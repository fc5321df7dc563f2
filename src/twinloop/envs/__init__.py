"""Gymnasium environments: virtual patients driven by an agent's insulin.

:class:`GlucoseVectorEnv` steps N patients of a model that declares a control
interface (the type 1 diabetes model) through one compiled step of the closed loop of
:mod:`twinloop.control`; :class:`GlucoseEnv` is one patient. Importing this package
registers ``twinloop/T1D-v0`` with Gymnasium::

    import gymnasium
    import twinloop.envs  # registers the ids
    env = gymnasium.make("twinloop/T1D-v0")
    envs = gymnasium.make_vec("twinloop/T1D-v0", num_envs=1000, vectorization_mode="vector_entry_point")
"""

from typing import TYPE_CHECKING

from twinloop._config import ensure_jax
from twinloop._lazy import attach

ensure_jax()  # before any module of this package imports JAX

if TYPE_CHECKING:
    from twinloop.envs.core import EnvSettings as EnvSettings
    from twinloop.envs.registration import ENV_ID as ENV_ID
    from twinloop.envs.registration import register_envs as register_envs
    from twinloop.envs.resolve import controllable_model as controllable_model
    from twinloop.envs.reward import risk_index as risk_index
    from twinloop.envs.single import GlucoseEnv as GlucoseEnv
    from twinloop.envs.vector import GlucoseVectorEnv as GlucoseVectorEnv

__getattr__, __dir__, __all__ = attach(__name__, __file__)

from twinloop.envs.registration import register_envs as _register  # noqa: E402

_register()
