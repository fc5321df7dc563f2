"""``check_model``: the contract every built-in or user model must pass.

Like scikit-learn's ``check_estimator``: units declared for everything; the model
compiles under ``jit`` (batched backend) and ``vmap`` (diffrax backend) and the two
agree; sensitivities to the parameters are finite; states declared nonnegative stay
nonnegative in the model's standard scenario; a declared steady state is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from twinloop.errors import ModelError
from twinloop.models.base import Model


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one contract check."""

    name: str
    passed: bool
    detail: str


def _units(model: Model) -> str:
    items: list[Any] = [*model.states, *model.parameters, *model.inputs, *model.observables]
    missing = [i.name for i in items if not i.unit]
    if missing or not model.time_unit:
        raise AssertionError(f"no unit declared for {missing or ['model time']}")
    if not model.references:
        raise AssertionError("no literature reference declared")
    return f"{len(items)} declarations carry UCUM units; {len(model.references)} references"


def _scenario(model: Model) -> tuple[Any, np.ndarray, np.ndarray]:
    params = model.default_parameters
    plan, t_end = model.standard_scenario(model.param_map(params))
    times = np.linspace(0.0, t_end, 49)
    return plan, times, params


def _jit_and_vmap(model: Model) -> str:
    from twinloop.simulate import SolverSettings, simulate

    plan, times, params = _scenario(model)
    lower = np.array([p.lower for p in model.parameters])
    nudged = np.where(params * 1.05 <= np.array([p.upper for p in model.parameters]), params * 1.05, params)
    cohort = np.stack([params, np.maximum(nudged, lower)])
    kwargs: dict[str, Any] = {"times": times, "progress": False}
    batched = simulate(model, cohort, plan, **kwargs)
    vmapped = simulate(model, cohort, plan, settings=SolverSettings(backend="diffrax"), **kwargs)
    if batched.failures or vmapped.failures:
        raise AssertionError(f"integration failed: {batched.failures or vmapped.failures}")
    scale = np.maximum(np.abs(vmapped.observables), 1e-3)
    gap = float(np.max(np.abs(batched.observables - vmapped.observables) / scale))
    if not gap < 1e-3:
        raise AssertionError(f"batched (jit) and diffrax (vmap) backends differ by {gap:.2e} (relative)")
    return f"jit and vmap backends agree to {gap:.1e} (relative) on 2 patients"


def _gradients(model: Model) -> str:
    from twinloop.simulate.engine import observable_function

    plan, times, params = _scenario(model)
    fn = observable_function(model, plan, times)
    jac = jax.jacfwd(fn)(jnp.asarray(params))
    if not bool(jnp.all(jnp.isfinite(jac))):
        raise AssertionError("d(observables)/d(parameters) has non-finite entries")
    nonzero = int(jnp.sum(jnp.any(jac != 0, axis=(0, 1))))
    return f"finite sensitivities; {nonzero} of {len(params)} parameters move an observable"


def _nonnegative(model: Model) -> str:
    from twinloop.simulate import simulate

    plan, times, params = _scenario(model)
    traj = simulate(model, params, plan, times=times, save="all", progress=False)
    assert traj.states is not None
    for j, state in enumerate(model.states):
        low = float(np.min(traj.states[:, :, j]))
        if state.nonnegative and low < -1e-6 * max(1.0, float(np.max(np.abs(traj.states[:, :, j])))):
            raise AssertionError(f"state '{state.name}' went negative ({low:.3g} {state.unit})")
    return f"{sum(s.nonnegative for s in model.states)} nonnegative states stay >= 0"


def _steady_state(model: Model) -> str:
    if model.steady_state_inputs is None:
        return "no steady state declared"
    vectors = [model.default_parameters] + [model.preset(name) for name in model.presets]
    worst = 0.0
    for vector in vectors:
        p = model.param_map(jnp.asarray(vector))
        x0 = jnp.asarray(model.initial_state(p))
        dx = model.rhs(0.0, x0, model.steady_state_inputs(p), p)
        worst = max(worst, float(jnp.max(jnp.abs(dx) / (jnp.abs(x0) + 1.0))))
    if not worst < 1e-6:
        raise AssertionError(f"|dx/dt| / (|x| + 1) = {worst:.2e} at the declared steady state")
    return f"steady state holds for {len(vectors)} parameter sets (max relative rate {worst:.1e} per {model.time_unit})"


CHECKS: tuple[tuple[str, Callable[[Model], str]], ...] = (
    ("units", _units),
    ("jit_and_vmap", _jit_and_vmap),
    ("gradients", _gradients),
    ("nonnegative_states", _nonnegative),
    ("steady_state", _steady_state),
)


def check_model(model: Model, *, raise_on_failure: bool = True) -> list[CheckResult]:
    """Run the model contract; return one result per check.

    Raises:
        ModelError: listing every failed check, unless ``raise_on_failure=False``.
    """
    results = []
    for name, check in CHECKS:
        try:
            results.append(CheckResult(name, True, check(model)))
        except Exception as exc:  # noqa: BLE001  (every failure is reported, not just the first)
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
    failed = [r for r in results if not r.passed]
    if failed and raise_on_failure:
        lines = "; ".join(f"{r.name}: {r.detail}" for r in failed)
        raise ModelError(f"Model '{model.id}' fails its contract: {lines}")
    return results
