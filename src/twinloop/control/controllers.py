"""simglucose's basal-bolus and PID controllers, with the same parameterisation.

Both are written for one patient in JAX and compiled into the closed loop; with a
noise-free sensor their closed loop matches simglucose's own (``tests/test_control_peer.py``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from twinloop.control.types import Action, Controller, Observation
from twinloop.errors import InputError


def basal_bolus(target: float = 140.0, correction_above: float = 150.0) -> Controller:
    """simglucose's ``BBController``: the patient's basal rate, and at each announced meal
    a bolus of ``grams / carb ratio`` plus, when the CGM is above ``correction_above``,
    a correction ``(CGM - target) / correction factor`` (units)."""
    _finite("target", target)
    _finite("correction_above", correction_above)
    return _basal_bolus(float(target), float(correction_above))


@cache  # one object per settings: the closed loop compiled for it is reused
def _basal_bolus(target: float, correction_above: float) -> Controller:
    def policy(state: Any, obs: Observation) -> tuple[Any, Action]:
        import jax.numpy as jnp

        correction = jnp.where(obs.cgm > correction_above, (obs.cgm - target) / obs.correction_factor_mg_dl_per_U, 0.0)
        bolus = jnp.where(obs.meal_g > 0, obs.meal_g / obs.carb_ratio_g_per_U + correction, 0.0)
        return state, Action(obs.basal_U_per_min, bolus)

    settings = {"target_mg_dl": target, "correction_above_mg_dl": correction_above}
    return Controller("basal-bolus", lambda obs: (), policy, settings)


def pid(P: float = 0.001, I: float = 0.00001, D: float = 0.001, target: float = 140.0) -> Controller:  # noqa: E741
    """simglucose's ``PIDController``: basal rate ``P e + I sum(e dt) + D de/dt`` (U/min)
    on ``e = CGM - target``, no bolus. As in simglucose, the derivative starts from a
    previous reading of 0 and the integral from 0; the pump clips negative rates to 0.
    The defaults are the gains of simglucose's examples."""
    for key, value in (("P", P), ("I", I), ("D", D), ("target", target)):
        _finite(key, value)
    return _pid(float(P), float(I), float(D), float(target))


@cache
def _pid(P: float, I: float, D: float, target: float) -> Controller:  # noqa: E741
    def init(obs: Observation) -> Any:
        import jax.numpy as jnp

        zero = jnp.zeros_like(obs.cgm)
        return {"integral": zero, "previous": zero}

    def policy(state: Any, obs: Observation) -> tuple[Any, Action]:
        import jax.numpy as jnp

        error = obs.cgm - target
        rate = P * error + I * state["integral"] + D * (obs.cgm - state["previous"]) / obs.period_min
        state = {"integral": state["integral"] + error * obs.period_min, "previous": obs.cgm}
        return state, Action(rate, jnp.zeros_like(rate))

    return Controller("pid", init, policy, {"P": P, "I": I, "D": D, "target_mg_dl": target})


def _finite(key: str, value: Any) -> None:
    import math

    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)):
        raise InputError(f"Controller setting {key} must be a finite number; got {value!r}.")
