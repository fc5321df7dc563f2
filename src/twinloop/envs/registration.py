"""The environments' Gymnasium ids.

Gymnasium 1.x loads no plugins from entry points (0.x read the ``gymnasium.envs``
group; 1.0 removed it), so importing :mod:`twinloop.envs` registers the ids; an id
prefixed with the module, ``gymnasium.make("twinloop.envs:twinloop/T1D-v0")``, imports it
on the way.
"""

from __future__ import annotations

ENV_ID = "twinloop/T1D-v0"


def register_envs() -> None:
    """Register ``twinloop/T1D-v0`` (``gymnasium.make`` gives a ``GlucoseEnv``,
    ``gymnasium.make_vec`` a ``GlucoseVectorEnv``); keyword arguments of ``make`` and
    ``make_vec`` go to the environment (``model=...`` chooses another model). ``make_vec``'s
    ``"sync"`` and ``"async"`` modes would copy one ``GlucoseEnv`` N times (the same
    patient, a Python loop); its default here, ``"vector_entry_point"``, steps N patients
    in one compiled call. Idempotent."""
    import gymnasium

    if ENV_ID in gymnasium.registry:
        return
    gymnasium.register(
        id=ENV_ID,
        entry_point="twinloop.envs.single:GlucoseEnv",
        vector_entry_point="twinloop.envs.vector:GlucoseVectorEnv",
    )
