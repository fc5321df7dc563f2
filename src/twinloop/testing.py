"""Testing tools for model authors: ``check_model``, the contract every model must pass.

Like scikit-learn's ``check_estimator``: units declared for everything; the model
compiles under ``jit`` (batched backend) and ``vmap`` (diffrax backend) and the two
agree; sensitivities to the parameters are finite; states declared nonnegative stay
nonnegative in the model's standard scenario; a declared steady state is one.

The backends are compared over the part of the standard scenario the model's own
dynamics make predictable (:func:`comparison_horizon`): two correct solvers differ by
about their tolerance at every step, and a chaotic model (Lorenz-63) amplifies that
difference exponentially, so over a long scenario they would disagree however correct
both are. A model may declare the horizon itself (``model.profile.check_horizon``).
When the backends agree over the whole scenario, that is the horizon, and the growth of
errors is not measured (it costs one more compilation and run).

Example:
    >>> import twinloop as tl
    >>> from twinloop.testing import check_model
    >>> all(r.passed for r in check_model(tl.models.get("pk-one-compartment")))  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from twinloop.errors import InputError, ModelError
from twinloop.models.base import Model  # imports twinloop.models first, which configures JAX

TOLERANCE = 1e-3  # the relative difference the two backends may show
SOLVER_ERROR = 1e-6  # the default rtol: the backends differ by about rtol x the growth (measured on Lorenz-63)
SAFETY = 10.0  # compare only where a solver-sized error stays 10 x below TOLERANCE
PERTURBATION = 1e-4  # relative size of the nudge to the initial state that measures growth
N_TIMES = 49  # output times of the scenario grid


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
    times = np.linspace(0.0, t_end, N_TIMES)
    return plan, times, params


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b| / max(|b|, 1e-3)`` per time: the largest over patients and observables."""
    gap = np.abs(a - b) / np.maximum(np.abs(b), 1e-3)
    return np.asarray(np.max(gap, axis=(0, 2)))


def _two_patients(model: Model, params: np.ndarray) -> np.ndarray:
    """The default parameters and a second set 5 % above them (within the bounds)."""
    lower = np.array([p.lower for p in model.parameters])
    nudged = np.where(params * 1.05 <= np.array([p.upper for p in model.parameters]), params * 1.05, params)
    return np.stack([params, np.maximum(nudged, lower)])


def _observables(
    model: Model, cohort: np.ndarray, plan: Any, times: np.ndarray, backend: Literal["batched", "diffrax"] = "batched"
) -> Any:
    from twinloop.simulate import SolverSettings, simulate

    traj = simulate(model, cohort, plan, times=times, settings=SolverSettings(backend=backend), progress=False)
    if traj.failures:
        raise AssertionError(f"integration failed ({backend} backend): {traj.failures}")
    return traj.observables


def _growth(model: Model, cohort: np.ndarray, plan: Any, times: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The growth of a nudge to the initial state along ``times``, ``base`` the unnudged observables."""
    import jax.numpy as jnp

    x0 = np.abs(np.asarray(model.initial_state(model.param_map(jnp.asarray(cohort[0]))), dtype=np.float64))
    # a relative error in each state, as a solver makes (signs alternating); a state at zero keeps it
    direction = x0 * np.where(np.arange(x0.size) % 2 == 0, 1.0, -1.0)

    def nudged_state(p: Any) -> Any:
        x = jnp.asarray(model.initial_state(p))
        return x + PERTURBATION * jnp.asarray(direction).reshape((-1,) + (1,) * (x.ndim - 1))

    nudged = dataclasses.replace(model, initial_state=nudged_state, steady_state_inputs=None)
    return _relative(_observables(nudged, cohort, plan, times), base) / PERTURBATION


def perturbation_growth(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """How much the standard scenario amplifies a small error: the times of the scenario
    grid and, at each, the relative change of the observables per relative change of the
    initial state (each nonzero state nudged by :data:`PERTURBATION` of its value), the
    largest over the two patients the backends are compared on.

    About 1 or less for a model that forgets its initial state or carries it along,
    growing like ``exp(lambda t)`` for a chaotic one (``lambda`` its largest Lyapunov exponent).
    """
    plan, times, params = _scenario(model)
    cohort = _two_patients(model, params)
    return times, _growth(model, cohort, plan, times, _observables(model, cohort, plan, times))


def _declared_horizon(model: Model) -> float | None:
    """``model.profile.check_horizon`` if the model declares one (checked), else None."""
    declared = getattr(getattr(model, "profile", None), "check_horizon", None)
    if declared is None:
        return None
    if isinstance(declared, bool) or not (isinstance(declared, int | float) and declared > 0):
        raise ModelError(
            f"Model '{model.id}' declares profile.check_horizon={declared!r}; expected a number of "
            f"{model.time_unit} > 0 (the part of its standard scenario the backends can agree on)."
        )
    return float(declared)


def _horizon(times: np.ndarray, growth: np.ndarray, time_unit: str) -> tuple[float, str]:
    limit = TOLERANCE / (SOLVER_ERROR * SAFETY)
    beyond = np.flatnonzero(~(growth <= limit))  # NaN counts as beyond
    if beyond.size == 0:
        return float(times[-1]), f"errors grow at most {float(np.max(growth)):.2g}-fold over the scenario"
    end = float(times[max(int(beyond[0]) - 1, 1)])
    return end, f"errors grow more than {limit:.0f}-fold after {end:.3g} {time_unit}"


def comparison_horizon(model: Model) -> tuple[float, str]:
    """The end of the part of the standard scenario over which the backends are compared,
    and why: the model's declared ``profile.check_horizon``, else the last grid time up to
    which a solver-sized error (:data:`SOLVER_ERROR`) stays :data:`SAFETY` times below
    :data:`TOLERANCE` given :func:`perturbation_growth` (the whole scenario if it does)."""
    _, times, _ = _scenario(model)
    declared = _declared_horizon(model)
    if declared is not None:
        return min(declared, float(times[-1])), "declared by the model"
    times, growth = perturbation_growth(model)
    return _horizon(times, growth, model.time_unit)


def _jit_and_vmap(model: Model, horizon: float | None = None) -> str:
    plan, times, params = _scenario(model)
    cohort = _two_patients(model, params)
    chosen = horizon if horizon is not None else _declared_horizon(model)
    if chosen is not None:
        end = min(float(chosen), float(times[-1]))
        why = "given" if horizon is not None else "declared by the model"
        return _compare_backends(model, cohort, plan, np.linspace(0.0, end, N_TIMES), why)
    batched = _observables(model, cohort, plan, times)
    vmapped = _observables(model, cohort, plan, times, backend="diffrax")
    if float(np.max(_relative(batched, vmapped))) < TOLERANCE:  # no need to look at how errors grow
        return _agreement(batched, vmapped, times, model.time_unit, "the whole scenario")
    end, why = _horizon(times, _growth(model, cohort, plan, times, batched), model.time_unit)
    if end >= times[-1]:
        return _agreement(batched, vmapped, times, model.time_unit, why)
    return _compare_backends(model, cohort, plan, np.linspace(0.0, end, N_TIMES), why)


def _compare_backends(model: Model, cohort: np.ndarray, plan: Any, times: np.ndarray, why: str) -> str:
    batched = _observables(model, cohort, plan, times)
    vmapped = _observables(model, cohort, plan, times, backend="diffrax")
    return _agreement(batched, vmapped, times, model.time_unit, why)


def _agreement(batched: Any, vmapped: Any, times: np.ndarray, time_unit: str, why: str) -> str:
    """The backends' largest relative gap, or an AssertionError when it reaches the tolerance."""
    gap = float(np.max(_relative(batched, vmapped)))
    where = f"over 0 to {float(times[-1]):.4g} {time_unit} ({why})"
    if not gap < TOLERANCE:
        raise AssertionError(f"batched (jit) and diffrax (vmap) backends differ by {gap:.2e} (relative) {where}")
    return f"jit and vmap backends agree to {gap:.1e} (relative) on 2 patients {where}"


def _gradients(model: Model) -> str:
    import jax
    import jax.numpy as jnp

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
    import jax.numpy as jnp

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


def check_model(
    model: Model,
    *,
    raise_on_failure: bool = True,
    checks: Sequence[str] | None = None,
    horizon: float | None = None,
) -> list[CheckResult]:
    """Run the model contract; return one result per check.

    Arguments:
        checks: run only these (names of :data:`CHECKS`); all by default.
        horizon: compare the backends over ``0`` to ``horizon`` (model time) instead of
            the horizon :func:`comparison_horizon` chooses.

    Raises:
        ModelError: listing every failed check, unless ``raise_on_failure=False``.
        InputError: an unknown check name.
    """
    known = [name for name, _ in CHECKS]
    unknown = [c for c in checks or () if c not in known]
    if unknown:
        raise InputError(f"checks {unknown} are not model checks; choose from {known}.")
    results = []
    for name, check in CHECKS:
        if checks is not None and name not in checks:
            continue
        try:
            detail = _jit_and_vmap(model, horizon) if name == "jit_and_vmap" else check(model)
            results.append(CheckResult(name, True, detail))
        except Exception as exc:  # noqa: BLE001  (every failure is reported, not just the first)
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
    failed = [r for r in results if not r.passed]
    if failed and raise_on_failure:
        lines = "; ".join(f"{r.name}: {r.detail}" for r in failed)
        raise ModelError(f"Model '{model.id}' fails its contract: {lines}")
    return results
