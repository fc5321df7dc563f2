"""The closed loop: patients, sensor, controller and pump in one compiled loop.

Time runs in whole minutes, as in simglucose. Each control period (by default the
sensor's sample time) the controller reads an :class:`Observation` and returns an
:class:`Action`; then, minute by minute, the patient's plate is refilled with the
scenario's meals (eaten at the model's eating rate), the pump turns the requested
basal and bolus into delivered insulin, the model's discrete update runs, the patient
is integrated over the minute with its inputs held, and the sensor reads (every
sample time, held in between, with its error path and delay). The cohort is one
batch-last state; each patient has its own clock, controller state and step size.
``accurate=True`` integrates each minute adaptively (Tsit5, rtol = atol = 1e-6, the
engine's defaults); ``accurate=False`` takes the engine's fast-path scheme: fixed RK4
steps of the model's declared size (``ModelProfile.fast``; T1D: two per minute, within
0.02 mg/dL of the adaptive solve), or one Tsit5 step per minute for a model that
declares none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from twinloop.control.patients import Patients, control_interface
from twinloop.control.pump import Pump
from twinloop.control.result import ClosedLoopResult
from twinloop.control.scenario import RescueCarbs, Scenario
from twinloop.control.types import Action, Controller, Observation
from twinloop.errors import InputError
from twinloop.simulate.engine import padded_batch

if TYPE_CHECKING:
    from twinloop.models.base import Model

IOB_TAU_MIN = 55.0  # insulin on board: two compartments of 55 min (Hovorka et al. 2004)
CHUNK = 2048
MINUTE_RECORDS = ("bg", "sg", "cgm", "insulin", "carbs")


@dataclass(frozen=True)
class _Config:
    """What the compiled loop depends on besides the arrays (hashable)."""

    period: int
    sensor_period: int
    sensor_min: float
    sensor_max: float
    delay: int
    eat_rate: float
    accurate: bool
    pump: Pump
    rescue: RescueCarbs | None


def _config(model: Model, scenario: Scenario, accurate: bool) -> _Config:
    from twinloop.models.t1d_cgm import CGMSensor

    spec = CGMSensor(scenario.sensor).spec
    period = scenario.control_period
    if scenario.minutes % period:
        raise InputError(
            f"The run ({scenario.minutes} min) must be a whole number of control periods ({period} min); "
            "change days or period_min."
        )
    return _Config(period, scenario.sensor_period, spec.min_mg_dl, spec.max_mg_dl, scenario.sensor_delay_min,
                   control_interface(model).eat_rate_g_per_min, bool(accurate), Pump.named(scenario.pump),
                   scenario.rescue)  # fmt: skip


def exogenous(patients: Patients, scenario: Scenario, seed: int) -> dict[str, np.ndarray]:
    """The arrays a run reads (batch-last): meals, announcements, sensor errors, settings."""
    from twinloop.models.t1d_cgm import CGMSensor

    n = patients.n
    eaten, announced = scenario.meal_grid(n, seed)
    samples = scenario.minutes // scenario.sensor_period + 1
    if scenario.noise:
        times = scenario.sensor_period * np.arange(samples, dtype=np.float64)
        noise = CGMSensor(scenario.sensor, noise=True).errors(n, times, seed)
    else:
        noise = np.zeros((n, samples))
    return {
        "params": np.ascontiguousarray(patients.params.T),
        "eaten": np.ascontiguousarray(eaten.T),
        "announced": np.ascontiguousarray(announced.T),
        "noise": np.ascontiguousarray(noise.T),
        "basal": patients.basal,
        "carb_ratio": patients.carb_ratio,
        "correction_factor": patients.correction_factor,
    }


class _Plant:
    """The per-minute and per-period functions of one model under one configuration."""

    def __init__(self, model: Model, config: _Config) -> None:
        from twinloop.simulate.batched import interval_integrator

        control = control_interface(model)
        self.model, self.config = model, config
        rates = [i.name for i in model.rate_inputs]
        self.n_rates = len(rates)
        self.i_insulin, self.i_carbs = rates.index(control.insulin), rates.index(control.carbs)
        functions = {o.name: o.fn for o in model.observables}
        self.sensed = functions[control.sensed]
        self.plasma = functions[control.plasma] if control.plasma else self.sensed
        self.integrate = (
            interval_integrator(model, "tsit5", 1e-6, 1e-6, None, 4096) if config.accurate else _one_step(model)
        )

    def initial(self, exo: dict[str, Any]) -> tuple[dict[str, Any], Observation]:
        """The state at minute 0 (basal steady state) and the first observation."""
        import jax.numpy as jnp

        p = self.model.param_map(exo["params"])
        x = jnp.asarray(self.model.initial_state(p), dtype=jnp.float64)
        n = x.shape[-1]
        basal = jnp.asarray(exo["basal"])
        sg = self.sensed(x, p)
        reading = self._read(sg, exo["noise"], jnp.zeros((n,), dtype=jnp.int32))
        state = {
            "x": x,
            "u_prev": jnp.zeros((self.n_rates, n)),
            "dt": jnp.ones((n,)),
            "code": jnp.zeros((n,), dtype=jnp.int32),
            "t": jnp.zeros((n,), dtype=jnp.int32),
            "planned": jnp.zeros((n,)),
            "reading": reading,
            "iob": jnp.stack([basal * IOB_TAU_MIN, basal * IOB_TAU_MIN]),
            "last_rescue": jnp.full((n,), -1e9, dtype=jnp.float64),
            "delayed": jnp.broadcast_to(sg, (self.config.delay + 1, n)),
        }
        return state, self.observe(state, reading, jnp.zeros((n,)), exo)

    def observe(self, state: dict[str, Any], cgm: Any, meal: Any, exo: dict[str, Any]) -> Observation:
        import jax.numpy as jnp

        basal = jnp.asarray(exo["basal"])
        iob = state["iob"][0] + state["iob"][1] - 2.0 * IOB_TAU_MIN * basal
        period = jnp.full_like(cgm, float(self.config.period))
        return Observation(cgm, meal, state["t"].astype(cgm.dtype), iob, basal, jnp.asarray(exo["carb_ratio"]),
                           jnp.asarray(exo["correction_factor"]), period)  # fmt: skip

    def _read(self, sg: Any, noise: Any, sample: Any) -> Any:
        import jax.numpy as jnp

        error = jnp.take_along_axis(noise, (sample % noise.shape[0])[None, :], axis=0)[0]
        return jnp.clip(sg + error, self.config.sensor_min, self.config.sensor_max)

    def rescue(self, state: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """Rescue carbohydrate onto the plate when the latest reading is low."""
        import jax.numpy as jnp

        r = self.config.rescue
        if r is None:
            return state, jnp.zeros_like(state["planned"])
        t = state["t"].astype(jnp.float64)
        due = (state["reading"] < r.threshold_mg_dl) & (t - state["last_rescue"] >= r.refractory_min)
        grams = jnp.where(due, r.grams, 0.0)
        return {**state, "planned": state["planned"] + grams,
                "last_rescue": jnp.where(due, t, state["last_rescue"])}, grams  # fmt: skip

    def minute(self, state: dict[str, Any], action: Action, exo: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """One minute of every patient; returns the new state and the minute's record."""
        import jax.numpy as jnp

        cfg, model = self.config, self.model
        p = model.param_map(exo["params"])
        x, t = state["x"], state["t"]
        minute_of_run = (t % exo["eaten"].shape[0])[None, :]
        planned = state["planned"] + jnp.take_along_axis(exo["eaten"], minute_of_run, axis=0)[0]
        to_eat = jnp.minimum(cfg.eat_rate, planned)
        announced = jnp.take_along_axis(exo["announced"], minute_of_run, axis=0)[0]
        insulin = cfg.pump.basal(action.basal_U_per_min) + cfg.pump.bolus(action.bolus_U / cfg.period)
        u = jnp.zeros((self.n_rates, x.shape[-1])).at[self.i_insulin].set(insulin).at[self.i_carbs].set(to_eat)
        record = {"bg": self.plasma(x, p), "sg": self.sensed(x, p), "cgm": state["reading"], "insulin": insulin,
                  "carbs": to_eat}  # fmt: skip
        if model.discrete_update is not None:
            update = model.discrete_update(x, state["u_prev"], u, p)
            if model.sample_time and model.sample_time != 1.0:
                on_sample = (t % round(model.sample_time)) == 0
                update = jnp.where(on_sample, update, x)
            x = update
        tf = t.astype(jnp.float64)
        x, dt, code = self.integrate(x, u, p, tf, tf + 1.0, state["dt"])
        t = t + 1
        delayed = jnp.concatenate([state["delayed"][1:], self.sensed(x, p)[None]])
        sampled = (t % cfg.sensor_period) == 0
        reading = jnp.where(sampled, self._read(delayed[0], exo["noise"], t // cfg.sensor_period), state["reading"])
        new = {
            **state,
            "x": x,
            "u_prev": u,
            "dt": dt,
            "code": jnp.where(state["code"] == 0, code, state["code"]),
            "t": t,
            "planned": jnp.maximum(planned - to_eat, 0.0),
            "reading": reading,
            "iob": _insulin_on_board(state["iob"], insulin),
            "delayed": delayed,
        }
        return new, (record, reading, announced)

    def advance(self, state: dict[str, Any], action: Action, exo: dict[str, Any]) -> tuple[Any, ...]:
        """One control period: ``(state, next observation, per-minute records, rescue grams)``."""
        import jax
        import jax.numpy as jnp

        state, rescued = self.rescue(state)

        def step(carry: tuple[Any, Any, Any], _: Any) -> tuple[tuple[Any, Any, Any], Any]:
            s, cgm_sum, meal_sum = carry
            s, (record, reading, announced) = self.minute(s, action, exo)
            return (s, cgm_sum + reading, meal_sum + announced), record

        zero = jnp.zeros_like(state["planned"])
        (state, cgm_sum, meal_sum), records = jax.lax.scan(step, (state, zero, zero), None, length=self.config.period)
        obs = self.observe(state, cgm_sum / self.config.period, meal_sum, exo)
        return state, obs, records, rescued


def _one_step(model: Model) -> Callable[..., tuple[Any, Any, Any]]:
    """``integrate`` over one minute without error control: RK4 steps of the model's declared
    fast-path size (the engine's fast scheme), else one Tsit5 step."""
    import diffrax
    import jax.numpy as jnp

    from twinloop.simulate.batched import _rk_step
    from twinloop.simulate.fixed import rk4

    declared = model.profile.fast
    substeps = 0 if declared is None or declared.stiff else max(1, math.ceil(1.0 / declared.step - 1e-9))
    tableau = diffrax.Tsit5.tableau

    def integrate(x: Any, u: Any, p: Any, t0: Any, t1: Any, dt: Any) -> tuple[Any, Any, Any]:
        def f(t: Any, y: Any) -> Any:
            return model.rhs(t, y, u, p)

        if substeps:
            h = (t1 - t0) / substeps
            x1 = x
            for i in range(substeps):
                x1 = rk4(f, t0 + i * h, x1, h)
        else:
            x1, _, _ = _rk_step(f, tableau, t0, x, t1 - t0, f(t0, x))
        code = jnp.where(jnp.all(jnp.isfinite(x1), axis=0), 0, 4).astype(jnp.int32)
        return x1, dt, code

    return integrate


def _insulin_on_board(iob: Any, rate: Any) -> Any:
    """Exact one-minute update of two 55-minute compartments fed at ``rate`` (U/min)."""
    import jax.numpy as jnp

    a = math.exp(-1.0 / IOB_TAU_MIN)
    first = a * iob[0] + rate * IOB_TAU_MIN * (1.0 - a)
    second = a * iob[1] + a / IOB_TAU_MIN * iob[0] + rate * (IOB_TAU_MIN * (1.0 - a) - a)
    return jnp.stack([first, second])


_COMPILED: dict[tuple[Any, ...], tuple[Any, Callable[..., Any]]] = {}


def _compiled_run(model: Model, controller: Controller, config: _Config, periods: int) -> Callable[..., Any]:
    """The jitted closed loop of one model, controller and configuration (cached)."""
    key = (id(model), model.content_hash(), id(controller), config, periods)
    if key in _COMPILED:
        return _COMPILED[key][1]
    import jax

    plant = _Plant(model, config)

    def run(exo: dict[str, Any]) -> dict[str, Any]:
        state, obs = plant.initial(exo)
        memory = jax.vmap(controller.init)(obs)

        def period(carry: tuple[Any, ...], _: Any) -> tuple[tuple[Any, ...], Any]:
            state, memory, obs = carry
            memory, action = jax.vmap(controller.policy)(memory, obs)
            action = Action(*(jax.numpy.broadcast_to(a, obs.cgm.shape) for a in action))
            seen = obs.cgm
            state, obs, records, rescued = plant.advance(state, action, exo)
            return (state, memory, obs), (records, action, rescued, seen)

        (final, _, _), (records, actions, rescued, seen) = jax.lax.scan(
            period, (state, memory, obs), None, length=periods
        )
        return {"records": records, "basal": actions.basal_U_per_min, "bolus": actions.bolus_U,
                "rescue": rescued, "seen": seen, "code": final["code"]}  # fmt: skip

    fn = jax.jit(run)
    if len(_COMPILED) >= 16:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = (controller, fn)
    return fn


def closed_loop(
    model: Model,
    patients: Patients,
    controller: Controller,
    scenario: Scenario | None = None,
    *,
    seed: int = 0,
    accurate: bool = True,
    chunk_size: int = CHUNK,
) -> ClosedLoopResult:
    """Run ``controller`` on every patient through ``scenario``, closed-loop.

    The cohort runs in chunks of ``chunk_size`` patients through one compiled loop
    (the last chunk padded); the same seed gives the same meals, announcements and
    sensor errors, whatever the chunking.
    """
    import jax.numpy as jnp

    scenario = scenario or Scenario()
    if not isinstance(controller, Controller):
        raise InputError(f"controller must be a twinloop.control.Controller; got {type(controller).__name__}.")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise InputError(f"chunk_size must be a whole number >= 1; got {chunk_size!r}.")
    config = _config(model, scenario, accurate)
    periods = scenario.minutes // config.period
    exo = exogenous(patients, scenario, seed)
    size = padded_batch(patients.n, chunk_size)
    run = _compiled_run(model, controller, config, periods)
    parts = []
    for start in range(0, patients.n, size):
        rows = np.arange(start, min(start + size, patients.n))
        padded = np.concatenate([rows, np.full(size - rows.size, rows[-1])])
        chunk = {k: jnp.asarray(v[..., padded]) for k, v in exo.items()}
        out = run(chunk)
        parts.append(_host(out, rows.size))
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return ClosedLoopResult.from_arrays(model, patients, controller, scenario, seed, accurate, config.period, merged)


def _host(out: dict[str, Any], n: int) -> dict[str, np.ndarray]:
    """Patient-first numpy arrays of one chunk's output (its first ``n`` patients)."""
    minute = {k: np.asarray(v).reshape(-1, np.asarray(v).shape[-1]).T[:n] for k, v in out["records"].items()}
    per_period = {k: np.asarray(out[k]).T[:n] for k in ("basal", "bolus", "rescue", "seen")}
    return {**minute, **per_period, "code": np.asarray(out["code"])[:n]}


class LoopPlant:
    """The closed loop opened at the controller, for environments: a batch of patients
    stepped one control period at a time by actions from outside (``twinloop.envs``).

    Meals and sensor errors cover the scenario's days and repeat after them.
    """

    def __init__(
        self,
        model: Model,
        patients: Patients,
        scenario: Scenario | None = None,
        *,
        seed: int = 0,
        accurate: bool = False,
    ) -> None:
        import jax

        self.model, self.patients = model, patients
        self.scenario = scenario or Scenario()
        self.config = _config(model, self.scenario, accurate)
        self.reseed(seed)
        plant = _Plant(model, self.config)
        self.initial_fn = jax.jit(plant.initial)  # (exo) -> (state, observation)
        self.advance_fn = jax.jit(plant.advance)  # (state, action, exo) -> as advance()

    @property
    def period(self) -> int:
        return self.config.period

    def reseed(self, seed: int) -> None:
        """Draw the meals, announcements and sensor errors again from ``seed`` (same shapes:
        nothing recompiles)."""
        import jax.numpy as jnp

        self.exo = {k: jnp.asarray(v) for k, v in exogenous(self.patients, self.scenario, seed).items()}

    def initial(self) -> tuple[dict[str, Any], Observation]:
        """Every patient at minute 0 and the first observation."""
        return self.initial_fn(self.exo)

    def advance(self, state: dict[str, Any], action: Action) -> tuple[dict[str, Any], Observation, Any, Any]:
        """One control period under ``action`` (arrays of n): the new state, the next
        observation, the per-minute records (``bg``, ``sg``, ``cgm``, ``insulin``,
        ``carbs``; each ``(period, n)``) and the rescue grams taken."""
        return self.advance_fn(state, action, self.exo)
