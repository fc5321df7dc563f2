"""The batched integration engine: one model, many virtual patients, one compiled solve.

Time is cut into the intervals of a shared grid (output times, every input breakpoint,
every multiple of the model's sample time). On each interval the rate inputs are
constant and diffrax integrates with the chosen solver; at each grid point boluses are
added and the model's discrete update runs. No step therefore straddles a dose or a
change of rate. Patients are vmapped; a cohort runs in fixed-size chunks through one
compiled function (the last chunk is padded), so memory stays bounded and nothing is
recompiled between chunks or calls.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.simulate.batched import TABLEAU_SOLVERS, async_grid_solver, interval_integrator
from twinloop.simulate.fastpath import FastChunks, choose_path, tolerances
from twinloop.simulate.grid import integration_grid, rasterize
from twinloop.simulate.trajectories import Trajectories

SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "kvaerno5": diffrax.Kvaerno5,
}
FAILURE_REASONS = {
    1: "the solver reached its maximum number of steps (max_steps)",
    2: "the step size collapsed below the minimum (dt_min)",
    3: "the solver failed (see diffrax's result code)",
    4: "the state became non-finite (NaN or inf)",
}


class SimulationWarning(UserWarning):
    """Some patients of a cohort failed to integrate; the rest completed."""


@dataclass(frozen=True)
class SolverSettings:
    """How each grid interval is integrated.

    Arguments:
        backend: ``"batched"`` (default): explicit RK on a batch-last state with a
            step size per patient, fast, forward-mode differentiable. ``"diffrax"``:
            a vmapped ``diffrax.diffeqsolve`` per patient and interval, reverse-mode
            differentiable and open to implicit solvers.
        solver: one of ``SOLVERS`` (explicit Tsit5 by default; ``kvaerno5`` for stiff models).
        rtol, atol: tolerances of the adaptive PID step-size controller.
        fixed_dt: if set, take constant steps of at most this size instead of adapting
            (on the fast path: its step instead of the model's declared one).
        max_steps: the most steps allowed inside one grid interval.
        clock: batched backend only. ``"patient"`` (default): every patient advances
            through the grid on its own, the loop runs for the most steps one patient
            needs. ``"interval"``: the cohort moves interval by interval in lockstep.
        path: ``"accurate"`` (default): the adaptive solve above. ``"fast"``: fixed steps
            of the model's declared size (``ModelProfile.fast``) in one ``lax.scan``, for
            cohort work; every chunk checks ``check_patients`` of its patients against
            the accurate path and records the largest error. ``"auto"``: fast where the
            model declares a fast path and is not stiff, accurate otherwise.
        precision: ``"float64"`` (default) or ``"float32"`` (fast path only).
        check_patients: patients per chunk re-run on the accurate path (fast path).
        on_check_failure: what a chunk whose check exceeds the model's tolerance does:
            ``"fallback"`` (re-run it on the accurate path, with a warning) or
            ``"refuse"`` (raise).
    """

    backend: Literal["batched", "diffrax"] = "batched"
    solver: str = "tsit5"
    rtol: float = 1e-6
    atol: float = 1e-6
    fixed_dt: float | None = None
    max_steps: int = 4096
    clock: Literal["patient", "interval"] = "patient"
    path: Literal["accurate", "fast", "auto"] = "accurate"
    precision: Literal["float64", "float32"] = "float64"
    check_patients: int = 2
    on_check_failure: Literal["fallback", "refuse"] = "fallback"

    def __post_init__(self) -> None:
        if self.backend not in ("batched", "diffrax"):
            raise InputError(f"Unknown backend {self.backend!r}; choose 'batched' or 'diffrax'.")
        known = TABLEAU_SOLVERS if self.backend == "batched" else SOLVERS
        if self.solver not in known:
            raise InputError(
                f"Unknown solver {self.solver!r} for the {self.backend} backend; choose one of {', '.join(known)}."
            )
        if not (self.rtol > 0 and self.atol > 0):
            raise InputError(f"Tolerances must be > 0; got rtol={self.rtol}, atol={self.atol}.")
        if self.fixed_dt is not None and not self.fixed_dt > 0:
            raise InputError(f"fixed_dt must be > 0 when given; got {self.fixed_dt}.")
        if self.clock not in ("patient", "interval"):
            raise InputError(f"clock must be 'patient' or 'interval'; got {self.clock!r}.")
        if self.max_steps < 1:
            raise InputError(f"max_steps must be >= 1; got {self.max_steps}.")
        if self.path not in ("accurate", "fast", "auto"):
            raise InputError(f"path must be 'accurate', 'fast' or 'auto'; got {self.path!r}.")
        if self.precision not in ("float64", "float32"):
            raise InputError(f"precision must be 'float64' or 'float32'; got {self.precision!r}.")
        if isinstance(self.check_patients, bool) or not isinstance(self.check_patients, int) or self.check_patients < 1:
            raise InputError(
                f"check_patients must be an integer >= 1 (patients per chunk re-run on the accurate path); "
                f"got {self.check_patients!r}."
            )
        if self.on_check_failure not in ("fallback", "refuse"):
            raise InputError(f"on_check_failure must be 'fallback' or 'refuse'; got {self.on_check_failure!r}.")


COHORT_SOLVER = SolverSettings(path="auto")
"""Cohort work (products, trials, training sets, population constraints): the fast path
where the model declares one, checked against the accurate path chunk by chunk."""


def start_state(model: Model, p: Any, y0: Any) -> Any:
    """The state at the first grid point: ``y0`` when given (per patient), else the model's rule."""
    x0 = model.initial_state(p) if y0 is None else y0
    return jnp.asarray(x0, dtype=jnp.float64)


def _grid_runner(model: Model, integrate: Callable[..., tuple[Any, Any, Any]], save_states: bool) -> Callable[..., Any]:
    """Scan one patient (or a batch-last cohort) over the grid.

    At grid point k: add boluses, run the model's discrete update, record, then
    integrate over ``[grid[k], grid[k+1]]`` with the rates of that interval. ``y0``
    (``(n_states, *batch)`` or None) overrides the model's initial state.
    """

    def run(
        params: Any, rates: Any, jumps: Any, grid: Any, on_sample: Any, out_idx: Any, y0: Any = None
    ) -> dict[str, Any]:
        p = model.param_map(params)

        def at_grid_point(x: Any, k: Any, u_prev: Any, u_next: Any) -> Any:
            if model.events:
                x = model.apply_events(x, grid[k], p)
            x = model.apply_boluses(x, jumps[k], p)
            if model.discrete_update is not None:
                x = jnp.where(on_sample[k], model.discrete_update(x, u_prev, u_next, p), x)
            return x

        def record(x: Any) -> dict[str, Any]:
            out = {"observables": model.observe(x, p)}
            if save_states:
                out["states"] = x
            return out

        def step(carry: tuple[Any, ...], k: Any) -> tuple[tuple[Any, ...], Any]:
            x, u_prev, dt, code = carry
            u = rates[k]
            x = at_grid_point(x, k, u_prev, u)
            recorded = record(x)
            if model.events:
                x = model.apply_events(x, grid[k], p, after=True)
            x_next, dt, step_code = integrate(x, u, p, grid[k], grid[k + 1], dt)
            code = jnp.where(code == 0, step_code, code)
            return (x_next, u, dt, code), recorded

        x0 = start_state(model, p, y0)
        batch = x0.shape[1:]
        u0 = jnp.zeros_like(rates[0])
        dt0 = jnp.full(batch, grid[1] - grid[0])
        code0 = jnp.zeros(batch, dtype=jnp.int32)
        ks = jnp.arange(grid.shape[0] - 1)
        (x_end, u_last, _, code), recorded = jax.lax.scan(step, (x0, u0, dt0, code0), ks)
        last = record(at_grid_point(x_end, grid.shape[0] - 1, u_last, u_last))
        out = {k: jnp.concatenate([v, last[k][None]])[out_idx] for k, v in recorded.items()}
        finite = jnp.all(jnp.isfinite(out["observables"]), axis=(0, 1))
        out["code"] = jnp.where((code == 0) & ~finite, 4, code)
        return out

    return run


def _diffrax_integrator(model: Model, settings: SolverSettings) -> Callable[..., tuple[Any, Any, Any]]:
    """Per-patient ``diffeqsolve`` over one interval (vmapped by the caller)."""
    solver = SOLVERS[settings.solver]()
    term = diffrax.ODETerm(lambda t, y, args: model.rhs(t, y, args[0], args[1]))

    def integrate(x: Any, u: Any, p: Any, t0: Any, t1: Any, dt: Any) -> tuple[Any, Any, Any]:
        span = t1 - t0
        controller: diffrax.AbstractStepSizeController
        if settings.fixed_dt is None:
            controller = diffrax.PIDController(rtol=settings.rtol, atol=settings.atol)
            dt0 = span
        else:
            controller = diffrax.ConstantStepSize()
            dt0 = span / jnp.ceil(span / settings.fixed_dt - 1e-9)
        sol = diffrax.diffeqsolve(
            term, solver, t0, t1, dt0, x, args=(u, p),
            stepsize_controller=controller, saveat=diffrax.SaveAt(t1=True),
            max_steps=settings.max_steps, throw=False,
        )  # fmt: skip
        ys = sol.ys if sol.ys is not None else x[None]
        return ys[-1], dt, _failure_code(sol.result)

    return integrate


def _failure_code(result: Any) -> Any:
    return jnp.where(
        result == diffrax.RESULTS.successful,
        0,
        jnp.where(
            result == diffrax.RESULTS.max_steps_reached,
            1,
            jnp.where(result == diffrax.RESULTS.dt_min_reached, 2, 3),
        ),
    )


_COMPILED: dict[tuple[Any, ...], Callable[..., dict[str, Any]]] = {}
MAX_COMPILED = 32  # solvers kept; the oldest is dropped (with its XLA executables) beyond this


def _compiled(
    model: Model, settings: SolverSettings, save_states: bool, shared: bool, given_y0: bool = False
) -> Callable[..., Any]:
    """One jitted solve per (model, settings, save, input sharing, given initial states),
    reused across calls.

    Both backends take ``params (n, n_params)``, rates ``(n, G-1, R)``, jumps
    ``(n, G, B)`` (without the leading ``n`` when shared), grid arrays and ``y0 (n, S)``
    (ignored unless ``given_y0``), and return patient-first arrays.
    """
    key = (id(model), model.id, model.version, settings, save_states, shared, given_y0)
    if key in _COMPILED:
        return _COMPILED[key]
    if settings.backend == "batched" and settings.clock == "patient":
        solve = async_grid_solver(model, settings.solver, settings.rtol, settings.atol, settings.fixed_dt,
                                  settings.max_steps, save_states)  # fmt: skip

        def patient_clock(params: Any, rates: Any, jumps: Any, grid: Any, on_sample: Any, out_idx: Any, y0: Any) -> Any:
            if not shared:  # (n, G, C) -> (G, C, n)
                rates, jumps = jnp.moveaxis(rates, 0, -1), jnp.moveaxis(jumps, 0, -1)
            out_of_grid = (
                jnp.full(grid.shape, -1, dtype=jnp.int32).at[out_idx].set(jnp.arange(out_idx.shape[0], dtype=jnp.int32))
            )
            x0 = y0.T if given_y0 else None
            return solve(params.T, rates, jumps, grid, on_sample, out_of_grid, out_idx.shape[0], x0)

        fn: Callable[..., Any] = jax.jit(patient_clock)
    elif settings.backend == "batched":
        integrate = interval_integrator(
            model, settings.solver, settings.rtol, settings.atol, settings.fixed_dt, settings.max_steps
        )
        run = _grid_runner(model, integrate, save_states)

        def batch_last(params: Any, rates: Any, jumps: Any, grid: Any, on_sample: Any, out_idx: Any, y0: Any) -> Any:
            if not shared:  # (n, G, C) -> (G, C, n)
                rates, jumps = jnp.moveaxis(rates, 0, -1), jnp.moveaxis(jumps, 0, -1)
            out = run(params.T, rates, jumps, grid, on_sample, out_idx, y0.T if given_y0 else None)
            out["observables"] = jnp.moveaxis(out["observables"], -1, 0)  # (T, O, n) -> (n, T, O)
            if "states" in out:
                out["states"] = jnp.moveaxis(out["states"], -1, 0)
            return out

        fn = jax.jit(batch_last)
    else:
        run = _grid_runner(model, _diffrax_integrator(model, settings), save_states)
        axis = None if shared else 0

        def per_patient(params: Any, rates: Any, jumps: Any, grid: Any, on_sample: Any, out_idx: Any, y0: Any) -> Any:
            return run(params, rates, jumps, grid, on_sample, out_idx, y0 if given_y0 else None)

        fn = eqx.filter_jit(jax.vmap(per_patient, in_axes=(0, axis, axis, None, None, None, 0)))
    if len(_COMPILED) >= MAX_COMPILED:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = fn
    return fn


def _as_param_matrix(model: Model, params: Any) -> np.ndarray:
    if isinstance(params, Mapping) or hasattr(params, "columns"):
        matrix = model.parameters_from(params)
    else:
        matrix = np.asarray(params, dtype=np.float64)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
    n_params = len(model.parameters)
    if matrix.ndim != 2 or matrix.shape[1] != n_params:
        raise InputError(
            f"params must have shape (n_patients, {n_params}) for model '{model.id}' "
            f"(parameters in the order {list(model.parameter_names)}); got shape {matrix.shape}."
        )
    if not np.all(np.isfinite(matrix)):
        row = int(np.argwhere(~np.isfinite(matrix))[0, 0])
        raise InputError(f"params of patient {row} contain a non-finite value; every parameter must be finite.")
    return matrix


def _as_y0(model: Model, y0: Any, n: int) -> np.ndarray | None:
    """``(n, n_states)`` initial states from one state vector or one per patient (or None)."""
    if y0 is None:
        return None
    states = np.asarray(y0, dtype=np.float64)
    n_states = len(model.states)
    if states.ndim == 1 and states.shape == (n_states,):
        states = np.broadcast_to(states, (n, n_states))
    if states.shape != (n, n_states):
        raise InputError(
            f"y0 must be one state vector ({n_states},) or one per patient ({n}, {n_states}) for model "
            f"'{model.id}' (states in the order {list(model.state_names)}); got shape {states.shape}."
        )
    if not np.all(np.isfinite(states)):
        row = int(np.argwhere(~np.isfinite(states))[0, 0])
        raise InputError(f"y0 of patient {row} contains a non-finite value; every initial state must be finite.")
    return np.ascontiguousarray(states)


def _as_times(times: Any) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.size < 2:
        raise InputError(f"times must hold at least two output times; got {t.size}.")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise InputError("times must be finite and strictly increasing.")
    return t


def _patient_ids(ids: Sequence[str] | None, n: int) -> list[str]:
    if ids is None:
        width = max(4, len(str(n - 1)))
        return [f"vp{i:0{width}d}" for i in range(n)]
    out = [str(i) for i in ids]
    if len(out) != n:
        raise InputError(f"patient_ids has {len(out)} entries for {n} patients; give one id per patient.")
    if len(set(out)) != n:
        raise InputError("patient_ids must be unique.")
    return out


def simulate_chunks(
    model: Model,
    params: Any,
    inputs: Inputs | Sequence[Inputs],
    *,
    times: Any,
    patient_ids: Sequence[str] | None = None,
    settings: SolverSettings | None = None,
    chunk_size: int = 1000,
    save: Literal["observables", "all"] = "observables",
    progress: bool = False,
    y0: Any = None,
) -> Iterator[Trajectories]:
    """Integrate a cohort chunk by chunk, yielding one :class:`Trajectories` per chunk.

    Arguments are those of :func:`simulate`; use this generator to stream a large
    cohort to disk with bounded memory.
    """
    settings = settings or SolverSettings()
    matrix = _as_param_matrix(model, params)
    states0 = _as_y0(model, y0, matrix.shape[0])
    t_out = _as_times(times)
    ids = _patient_ids(patient_ids, matrix.shape[0])
    plans: list[Inputs] = [inputs] if isinstance(inputs, Inputs) else list(inputs)
    cohort_plan = isinstance(inputs, Inputs) and inputs.n_patients is not None
    shared = isinstance(inputs, Inputs) and not cohort_plan
    if not isinstance(inputs, Inputs) and len(plans) != matrix.shape[0]:
        raise InputError(
            f"Got {len(plans)} input plans for {matrix.shape[0]} patients; give one plan or one per patient."
        )
    if cohort_plan and plans[0].n_patients != matrix.shape[0]:
        raise InputError(
            f"The input plan holds per-patient values for {plans[0].n_patients} patients but "
            f"{matrix.shape[0]} parameter vectors were given; give one value per patient."
        )
    for plan in plans:
        plan.validate(model)
    if save not in ("observables", "all"):
        raise InputError(f"save must be 'observables' or 'all'; got {save!r}.")
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1; got {chunk_size}.")

    exact = integration_grid(model, plans, t_out)
    grid = padded_grid(exact)
    out_idx = np.searchsorted(grid, t_out)
    on_sample = _on_sample(model, grid)
    fn = _compiled(model, settings, save == "all", shared, states0 is not None)
    starts = states0 if states0 is not None else np.zeros((matrix.shape[0], len(model.states)))
    if shared:
        rates_all, jumps_all = (a[0] for a in rasterize(model, plans, grid))

    n = matrix.shape[0]
    size = padded_batch(n, chunk_size)
    choice = choose_path(model, settings.path, matrix, states0, exact, settings.fixed_dt)

    def accurate(m: np.ndarray, rates: Any, jumps: Any, y: np.ndarray) -> dict[str, Any]:
        rows = np.minimum(np.arange(padded_batch(len(m), chunk_size)), len(m) - 1)
        if not shared:
            rates, jumps = rates[rows], jumps[rows]
        out = jax.device_get(fn(m[rows], rates, jumps, grid, on_sample, out_idx, y[rows]))
        return {name: np.asarray(v)[: len(m)] for name, v in out.items()}

    fast = (
        FastChunks(model, choice, exact, grid, out_idx, on_sample, save_states=save == "all", shared=shared,
                   given_y0=states0 is not None, precision=settings.precision,
                   check_patients=settings.check_patients, on_check_failure=settings.on_check_failure,
                   accurate=accurate)
        if choice.fast else None
    )  # fmt: skip
    n_chunks = math.ceil(n / size)
    with _ProgressBar(progress and n_chunks > 1, n, model.id) as bar:
        for c in range(n_chunks):
            lo, hi = c * size, min((c + 1) * size, n)
            idx = np.minimum(np.arange(lo, lo + size), n - 1)  # pad the last chunk
            if cohort_plan:
                rates_all, jumps_all = rasterize(model, plans, grid, rows=idx)
            elif not shared:
                rates_all, jumps_all = rasterize(model, [plans[i] for i in idx], grid)
            check: dict[str, Any] = {} if settings.path == "accurate" else choice.record()
            if fast is not None:
                out, record = fast.solve(c, hi - lo, matrix[idx], rates_all, jumps_all, starts[idx])
                record["patients"] = [ids[lo + i] for i in record.pop("rows")]
                check.update(record, precision=settings.precision, tolerance=tolerances(model))
            else:
                out = jax.device_get(fn(matrix[idx], rates_all, jumps_all, grid, on_sample, out_idx, starts[idx]))
            yield _chunk_result(model, out, hi - lo, t_out, ids[lo:hi], settings, check)
            bar(hi - lo)


def padded_batch(n: int, chunk_size: int) -> int:
    """The batch that ``n`` patients run in: ``chunk_size`` when they fill it, otherwise the
    smallest of 8, 12, 16, 24, 32, 48, ... (powers of two and 1.5 times them) holding them,
    so cohorts of nearby sizes (a trial's arms, a power curve's n) reuse one compiled solve
    at the cost of at most a third more rows."""
    bucket = 8
    while bucket < n:
        bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket * 4 // 3
    return max(1, min(chunk_size, bucket))


def padded_grid(grid: np.ndarray, minimum: int = 64) -> np.ndarray:
    """The grid padded to a power-of-two length with tiny intervals after its end, so
    calls whose grids differ slightly in length reuse one compiled solve."""
    size = max(minimum, 1 << math.ceil(math.log2(grid.size)))
    extra = size - grid.size
    if extra == 0:
        return grid
    eps = 1e-9 * max(1.0, abs(float(grid[-1])))
    return np.concatenate([grid, grid[-1] + eps * np.arange(1, extra + 1)])


def _on_sample(model: Model, grid: np.ndarray) -> np.ndarray:
    if not model.sample_time:
        return np.zeros(grid.shape, dtype=bool)
    phase = (grid - grid[0]) / model.sample_time
    return np.abs(phase - np.round(phase)) < 1e-9


def _chunk_result(
    model: Model,
    out: dict[str, Any],
    n: int,
    times: np.ndarray,
    ids: list[str],
    settings: SolverSettings,
    check: dict[str, Any],
) -> Trajectories:
    codes = np.asarray(out["code"])[:n]
    failures = {ids[i]: FAILURE_REASONS[int(codes[i])] for i in np.flatnonzero(codes)}
    states = np.asarray(out["states"])[:n] if "states" in out else None
    return Trajectories(
        model_id=model.id,
        model_version=model.version,
        time_unit=model.time_unit,
        times=times,
        patient_ids=ids,
        observable_names=model.observable_names,
        observable_units=tuple(o.unit for o in model.observables),
        observables=np.asarray(out["observables"])[:n],
        state_names=model.state_names if states is not None else (),
        state_units=tuple(s.unit for s in model.states) if states is not None else (),
        states=states,
        failures=failures,
        settings={"backend": settings.backend, "clock": settings.clock, "solver": settings.solver,
                  "rtol": settings.rtol, "atol": settings.atol, "fixed_dt": settings.fixed_dt,
                  "max_steps": settings.max_steps, "path": check.get("path", "accurate"),
                  "precision": settings.precision if check.get("path") == "fast" else "float64"},
        check=check,
    )  # fmt: skip


class _ProgressBar:
    """A Rich progress bar over patients, or a no-op."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total, label
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.enabled:
            self._progress = Progress(
                TextColumn(f"simulating {self.label}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("patients"), TimeRemainingColumn(), transient=True,
            )  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task("simulate", total=self.total)
        return self._advance

    def _advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def simulate(
    model: Model,
    params: Any,
    inputs: Inputs | Sequence[Inputs],
    *,
    times: Any,
    patient_ids: Sequence[str] | None = None,
    settings: SolverSettings | None = None,
    chunk_size: int = 1000,
    save: Literal["observables", "all"] = "observables",
    progress: bool = True,
    y0: Any = None,
) -> Trajectories:
    """Integrate N virtual patients at once and return their trajectories.

    Arguments:
        model: the mechanistic model (``twinloop.models.get(...)``).
        params: ``(n_patients, n_params)`` array in the model's parameter order, one
            parameter vector, or a mapping / DataFrame with one column per parameter.
        inputs: one :class:`Inputs` plan shared by all patients, one per patient, or
            one cohort plan whose rates and amounts are arrays with a value per patient.
        times: the output times, in model time units, strictly increasing.
        patient_ids: one id per patient (default ``vp0000``, ``vp0001``, ...).
        settings: solver and tolerances (:class:`SolverSettings`).
        chunk_size: patients per compiled batch; bounds memory.
        save: ``"observables"`` (default) or ``"all"`` to keep every state too.
        progress: show a progress bar when there is more than one chunk.
        y0: initial states overriding ``model.initial_state(p)``: one state vector for
            every patient or an ``(n_patients, n_states)`` array (e.g. an ensemble
            restarted from its current states, or uncertain initial conditions).

    Returns:
        :class:`Trajectories`. Patients whose integration failed are listed in
        ``failures`` (id -> reason) and a :class:`SimulationWarning` is issued; the
        others are unaffected.

    Raises:
        InputError: for parameters, inputs, times or settings that do not fit the model.

    Example:
        >>> import twinloop as tl
        >>> model = tl.models.get("t1d-uva-padova")
        >>> p = model.param_map(model.preset("adult#001"))
        >>> plan = tl.models.t1d_uva_padova.basal_bolus(p, [(420, 50)])
        >>> traj = tl.simulate(model, model.preset("adult#001"), plan, times=range(0, 1441, 5))
        >>> traj["plasma_glucose"].shape
        (1, 289)
    """
    chunks = list(
        simulate_chunks(
            model,
            params,
            inputs,
            times=times,
            patient_ids=patient_ids,
            settings=settings,
            chunk_size=chunk_size,
            save=save,
            progress=progress,
            y0=y0,
        )
    )
    result = Trajectories.concat(chunks)
    if result.failures:
        shown = "; ".join(f"{k}: {v}" for k, v in list(result.failures.items())[:5])
        warnings.warn(
            f"{len(result.failures)} of {result.n_patients} patients failed to integrate ({shown}).",
            SimulationWarning,
            stacklevel=2,
        )
    return result


def observable_function(
    model: Model, inputs: Inputs, times: Any, settings: SolverSettings | None = None, *, y0: Any = None
) -> Callable[[Any], Any]:
    """``params -> observables (n_times, n_observables)`` for one patient, as a pure JAX
    function (batched backend) to differentiate with ``jax.jacfwd`` or use in inference.
    ``y0`` (one state vector) overrides the model's initial state."""
    starts = None if y0 is None else _as_y0(model, np.asarray(y0).reshape(-1), 1)
    cohort = cohort_observable_function(model, [inputs], times, settings, y0=starts)

    def observables(params: Any) -> Any:
        return cohort(jnp.asarray(params)[None])[0]

    return observables


def cohort_observable_function(
    model: Model, inputs: Sequence[Inputs], times: Any, settings: SolverSettings | None = None, *, y0: Any = None
) -> Callable[[Any], Any]:
    """``params (n, n_params) -> observables (n, n_times, n_observables)`` for a fixed cohort
    of ``n = len(inputs)`` patients, each under its own inputs, as a pure JAX function
    (``y0``: their initial states ``(n, n_states)``, or the model's rule if None).

    Every patient's outputs depend only on its own parameters, so one forward-mode
    derivative along a parameter for all patients at once gives that column of every
    patient's Jacobian (what a population fit needs)."""
    settings = settings or SolverSettings()
    if settings.backend != "batched":
        raise InputError("cohort_observable_function uses the batched backend; leave settings.backend at 'batched'.")
    if not inputs:
        raise InputError("cohort_observable_function needs the inputs of at least one patient.")
    for plan in inputs:
        plan.validate(model)
    t_out = _as_times(times)
    grid = integration_grid(model, list(inputs), t_out)
    rates, jumps = (jnp.moveaxis(jnp.asarray(a), 0, -1) for a in rasterize(model, list(inputs), grid))
    integrate = interval_integrator(
        model, settings.solver, settings.rtol, settings.atol, settings.fixed_dt, settings.max_steps
    )
    run = _grid_runner(model, integrate, save_states=False)
    starts = _as_y0(model, y0, len(inputs))
    x0 = None if starts is None else jnp.asarray(starts.T)
    args = (
        rates,
        jumps,
        jnp.asarray(grid),
        jnp.asarray(_on_sample(model, grid)),
        jnp.asarray(np.searchsorted(grid, t_out)),
    )

    def observables(params: Any) -> Any:
        return jnp.moveaxis(run(params.T, *args, x0)["observables"], -1, 0)

    return observables
