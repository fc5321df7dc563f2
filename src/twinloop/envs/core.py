"""The batch of patients behind both glucose environments: one compiled step for all.

:class:`EnvCore` holds a :class:`twinloop.control.loop.LoopPlant` and what an
environment adds to it: the CGM history, the step count, the observation vector, the
reward, termination and truncation, and fresh meals and sensor errors for patients
that start a new episode. Every per-patient computation is a JAX array operation over
the batch; nothing loops over patients in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from twinloop.control.loop import LoopPlant
from twinloop.control.pump import Pump
from twinloop.control.types import Action, Observation
from twinloop.envs.reward import risk_index
from twinloop.errors import InputError

if TYPE_CHECKING:
    from twinloop.control.patients import Patients
    from twinloop.control.scenario import Scenario
    from twinloop.models.base import Model

MINUTES_PER_DAY = 1440.0
REDRAWN = ("eaten", "announced", "noise")  # the exogenous arrays a new episode draws again


@dataclass(frozen=True)
class EnvSettings:
    """What an environment adds to the closed loop (validated).

    Arguments:
        history: CGM values in the observation (one per control period).
        max_basal_U_per_h: the largest basal rate an action may ask for.
        max_bolus_U: the largest bolus an action may ask for.
        terminate_below_mg_dl: an episode ends when plasma glucose falls below this at
            any minute (None: never).
        terminate_above_mg_dl: an episode ends when plasma glucose rises above this at
            any minute (None: never).
        accurate: integrate each minute adaptively (the closed loop's reference path)
            instead of one Tsit5 step per minute.
    """

    history: int = 12
    max_basal_U_per_h: float = 10.0
    max_bolus_U: float = 50.0
    terminate_below_mg_dl: float | None = 10.0
    terminate_above_mg_dl: float | None = 600.0
    accurate: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.history, int) and not isinstance(self.history, bool) and 1 <= self.history <= 1440):
            raise InputError(f"history must be a whole number of control periods in 1..1440; got {self.history!r}.")
        for key in ("max_basal_U_per_h", "max_bolus_U"):
            _number(key, getattr(self, key), positive=True)
        for key in ("terminate_below_mg_dl", "terminate_above_mg_dl"):
            if getattr(self, key) is not None:
                _number(key, getattr(self, key), positive=False)
        low, high = self.terminate_below_mg_dl, self.terminate_above_mg_dl
        if low is not None and high is not None and low >= high:
            raise InputError(f"terminate_below_mg_dl ({low}) must be below terminate_above_mg_dl ({high}).")
        if not isinstance(self.accurate, bool):
            raise InputError(f"accurate must be True or False; got {self.accurate!r}.")


def _number(key: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0) or value < 0:
        raise InputError(f"{key} must be a finite number {'> 0' if positive else '>= 0'}; got {value!r}.")


@dataclass(frozen=True)
class _Limits:
    """The constants the compiled step depends on (hashable)."""

    max_steps: int
    below: float
    above: float
    cgm_low: float
    cgm_high: float


class EnvCore:
    """``n`` patients stepped together, one control period per step."""

    def __init__(self, model: Model, patients: Patients, scenario: Scenario, settings: EnvSettings) -> None:
        from twinloop.models.t1d_cgm import CGMSensor

        self.model, self.patients, self.scenario, self.settings = model, patients, scenario, settings
        self.plant = LoopPlant(model, patients, scenario, seed=0, accurate=settings.accurate)
        self.n, period = patients.n, self.plant.period
        pump = Pump.named(scenario.pump)
        for key, value, limit, unit in (
            ("max_basal_U_per_h", settings.max_basal_U_per_h, pump.max_basal * 60.0, "U/h"),
            ("max_bolus_U", settings.max_bolus_U, pump.max_bolus * period, f"U per {period}-min period"),
        ):
            if value > limit:
                raise InputError(f"{key} = {value} is above what the {pump.name} pump delivers ({limit:g} {unit}); "
                                 "lower it or choose another pump in the scenario.")  # fmt: skip
        spec = CGMSensor(scenario.sensor).spec
        below, above = settings.terminate_below_mg_dl, settings.terminate_above_mg_dl
        self.limits = _Limits(scenario.minutes // period, -math.inf if below is None else float(below),
                              math.inf if above is None else float(above), spec.min_mg_dl, spec.max_mg_dl)  # fmt: skip
        self.action_low = np.zeros(2)
        self.action_high = np.array([settings.max_basal_U_per_h, settings.max_bolus_U], dtype=np.float64)
        self._start = jax.jit(partial(_start, history=settings.history, limits=self.limits))
        # the plant's jitted functions of (..., exo), composed into one compiled call per step
        advance, initial = self.plant.advance_fn, self.plant.initial_fn
        self._period = jax.jit(partial(_period, advance=advance, initial=initial, limits=self.limits))
        self._none = np.zeros(self.n, dtype=bool)
        self._state: dict[str, Any] | None = None
        self._hist: Any = None
        self._steps: Any = None

    def spaces(self) -> tuple[Any, Any]:
        """One patient's observation and action spaces (float32 boxes)."""
        from gymnasium.spaces import Box

        h, lim = self.settings.history, self.limits
        low = np.array([lim.cgm_low] * h + [-np.inf, 0.0, -1.0, -1.0], dtype=np.float32)
        high = np.array([lim.cgm_high] * h + [np.inf, np.inf, 1.0, 1.0], dtype=np.float32)
        action = Box(self.action_low.astype(np.float32), self.action_high.astype(np.float32), dtype=np.float32)
        return Box(low, high, dtype=np.float32), action

    def reset(self, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Every patient at minute 0 of a new episode, its meals and sensor errors drawn from ``seed``."""
        self.plant.reseed(seed)
        self._state, first = self._initial()
        self._hist, self._steps, vector = self._start(first)
        return np.array(vector), {"cgm_mg_dl": np.array(first.cgm), "meal_g": np.array(first.meal_g)}

    def step(
        self, actions: Any, fresh: np.ndarray | None = None, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """One control period of every patient under ``actions`` (``(n, 2)``: basal U/h,
        bolus U, clipped to the bounds); the patients flagged ``fresh`` start a new episode
        instead, with meals and sensor errors drawn from ``seed``."""
        if self._state is None:
            raise InputError("Call reset() before step(): the environment has no episode yet.")
        a = self.clip(actions)
        action = Action(a[:, 0] / 60.0, a[:, 1])
        if fresh is not None and fresh.any():
            self._redraw(np.flatnonzero(fresh), 0 if seed is None else seed)
        else:
            fresh = self._none
        args = (self._state, action, self.plant.exo, self._hist, self._steps, fresh)
        self._state, self._hist, self._steps, out = self._period(*args)
        vector, reward, terminated, truncated, info = out
        host = {k: np.array(v) for k, v in info.items()}
        return np.array(vector), np.array(reward), np.array(terminated), np.array(truncated), host

    def clip(self, actions: Any) -> np.ndarray:
        """``actions`` as a ``(n, 2)`` float64 array within the action bounds."""
        try:
            a = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"actions must be numbers (basal U/h, bolus U); got {actions!r}.") from exc
        if a.shape != (self.n, 2):
            raise InputError(f"actions must have shape ({self.n}, 2) (basal U/h, bolus U per patient); got {a.shape}.")
        if not np.all(np.isfinite(a)):
            raise InputError("Every action must be finite (basal U/h, bolus U); got NaN or infinity.")
        return np.clip(a, self.action_low, self.action_high)

    def _initial(self) -> tuple[dict[str, Any], Observation]:
        """The plant's first state and observation, typed as its later ones (no second compilation)."""
        state, first = self.plant.initial()
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), (state, first))

    def _redraw(self, rows: np.ndarray, seed: int) -> None:
        """New meals, announcements and sensor errors for the patients ``rows``, written
        into the plant's arrays in place (row counts padded to powers of two, so few
        shapes compile)."""
        drawn = self.draw(rows.size, seed)
        size = min(1 << (rows.size - 1).bit_length(), self.n)
        pad = np.full(size - rows.size, rows.size - 1)
        index = jnp.asarray(np.concatenate([rows, rows[pad]]))
        exo = dict(self.plant.exo)
        for key in REDRAWN:
            exo[key] = _scatter(exo[key], index, np.concatenate([drawn[key], drawn[key][pad]]))
        self.plant.exo = exo

    def draw(self, k: int, seed: int) -> dict[str, np.ndarray]:
        """The meals, announcements and sensor errors of ``k`` new episodes, patient-first:
        those ``twinloop.control.loop.exogenous`` draws for ``k`` patients and ``seed``
        (transposed on the device, not here)."""
        from twinloop.models.t1d_cgm import CGMSensor

        scenario = self.scenario
        eaten, announced = scenario.meal_grid(k, seed)
        times = scenario.sensor_period * np.arange(scenario.minutes // scenario.sensor_period + 1, dtype=np.float64)
        sensor = CGMSensor(scenario.sensor, noise=True)
        noise = sensor.errors(k, times, seed) if scenario.noise else np.zeros((k, times.size))
        return {"eaten": eaten, "announced": announced, "noise": noise}


@partial(jax.jit, donate_argnums=0)
def _scatter(table: Any, columns: Any, rows: Any) -> Any:
    """``table`` (time by patient) with the ``columns`` replaced by ``rows`` (patient by time)."""
    return table.at[:, columns].set(rows.T)


def _select(mask: Any, fresh: Any, current: Any) -> Any:
    """``fresh`` where ``mask`` (over the last, patient axis of every leaf), else ``current``."""
    return jax.tree.map(lambda a, b: jnp.where(mask, a, b), fresh, current)


def _period(
    state: Any,
    action: Action,
    exo: Any,
    hist: Any,
    steps: Any,
    fresh: Any,
    *,
    advance: Any,
    initial: Any,
    limits: _Limits,
) -> tuple[Any, ...]:
    """One control period of every patient, the patients ``fresh`` starting a new episode
    instead (their action ignored): plant state, history, step count and outputs."""
    state, obs, records, rescued = advance(state, action, exo)

    def restart(current: tuple[Any, Any]) -> tuple[Any, Any]:
        start, first = initial(exo)
        return _select(fresh, start, current[0]), _select(fresh, first, current[1])

    state, obs = jax.lax.cond(jnp.any(fresh), restart, lambda current: current, (state, obs))
    return (state, *_post(hist, steps, obs, records, rescued, fresh, limits=limits))


def _vector(hist: Any, obs: Observation, limits: _Limits) -> Any:
    angle = 2.0 * math.pi * jnp.mod(obs.time_min, MINUTES_PER_DAY) / MINUTES_PER_DAY
    extra = jnp.stack([obs.iob_U, obs.meal_g, jnp.sin(angle), jnp.cos(angle)], axis=1)
    return jnp.concatenate([jnp.clip(hist, limits.cgm_low, limits.cgm_high), extra], axis=1).astype(jnp.float32)


def _start(first: Observation, *, history: int, limits: _Limits) -> tuple[Any, Any, Any]:
    """The history (the first reading repeated), step count and observation of a new episode."""
    hist = jnp.broadcast_to(first.cgm[:, None], (first.cgm.shape[0], history))
    return hist, jnp.zeros(first.cgm.shape, dtype=jnp.int32), _vector(hist, first, limits)


def _post(
    hist: Any, steps: Any, obs: Observation, records: dict[str, Any], rescued: Any, fresh: Any, *, limits: _Limits
) -> tuple[Any, Any, tuple[Any, ...]]:
    """History, step count, observation, reward, termination, truncation and info after a period."""
    cgm = obs.cgm
    hist = jnp.where(fresh[:, None], cgm[:, None], jnp.concatenate([hist[:, 1:], cgm[:, None]], axis=1))
    steps = jnp.where(fresh, 0, steps + 1)
    bg = records["bg"].T
    inside = (jnp.min(bg, axis=1) >= limits.below) & (jnp.max(bg, axis=1) <= limits.above)  # NaN: outside
    terminated = ~fresh & ~inside
    truncated = ~fresh & (steps >= limits.max_steps)
    reward = jnp.where(fresh, 0.0, -risk_index(cgm))
    blank = fresh[:, None]
    info = {
        "plasma_glucose_mg_dl": jnp.where(blank, jnp.nan, bg),
        "insulin_U_per_min": jnp.where(blank, jnp.nan, records["insulin"].T),
        "carbs_g_per_min": jnp.where(blank, jnp.nan, records["carbs"].T),
        "rescue_g": jnp.where(fresh, 0.0, rescued),
        "cgm_mg_dl": cgm,
        "meal_g": obs.meal_g,
    }
    return hist, steps, (_vector(hist, obs, limits), reward, terminated, truncated, info)
