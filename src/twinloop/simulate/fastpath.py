"""Choosing the fast path, running it chunk by chunk, and checking it against the accurate one.

The fast path (:mod:`twinloop.simulate.fixed`) is used only where it is safe: the model
declares it (``ModelProfile.fast``) or the user asks for it, the model is not declared
stiff, and its Jacobian at a sample of the cohort's initial states puts ``spectral
radius x step`` inside RK4's stability region with a margin. It is never silently less
accurate: in every chunk a few patients (drawn by a seed fixed by the chunk) are re-run
on the accurate path and the largest difference per observable is recorded; where it
exceeds the model's tolerance the chunk is re-run on the accurate path (with a warning)
or the run is refused. Patients whose fast run is non-finite are re-run accurately.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinloop.errors import SimulationError
from twinloop.models.base import Model
from twinloop.simulate.fixed import Schedule, bucket, fixed_step_solver, schedule

STABILITY_MARGIN = 2.5  # RK4 is stable for |h * lambda| up to ~2.78 on the real axis, ~2.83 on the imaginary
STIFFNESS_SAMPLE = 16


class FastPathWarning(UserWarning):
    """A fast-path chunk failed its self-check and was re-run on the accurate path."""


@dataclass(frozen=True)
class PathChoice:
    """The path a run takes and why; ``step`` is the fast path's fixed step."""

    fast: bool
    reason: str
    step: float | None = None
    stiffness: float | None = None  # largest spectral radius x step over the sample

    def record(self) -> dict[str, Any]:
        return {"path": "fast" if self.fast else "accurate", "reason": self.reason, "step": self.step,
                "stiffness": self.stiffness}  # fmt: skip


_JACOBIANS: dict[tuple[Any, ...], Callable[..., Any]] = {}


def spectral_radii(model: Model, params: np.ndarray, starts: np.ndarray | None) -> np.ndarray:
    """The largest |eigenvalue| of the right-hand side's Jacobian at each patient's initial
    state (inputs off, time 0); ``params (n, P)``, ``starts (n, S)`` or None."""
    import jax
    import jax.numpy as jnp

    key = (id(model), model.id, model.version, starts is None)
    if key not in _JACOBIANS:
        zeros = jnp.zeros(len(model.rate_inputs))

        def jacobian(vector: Any, x0: Any) -> Any:
            p = model.param_map(vector)
            x = jnp.asarray(model.initial_state(p), dtype=jnp.float64) if starts is None else x0
            return jax.jacfwd(lambda y: model.rhs(0.0, y, zeros, p))(x)

        _JACOBIANS[key] = jax.jit(jax.vmap(jacobian))
    x0 = np.zeros((params.shape[0], len(model.states))) if starts is None else starts
    jac = np.asarray(_JACOBIANS[key](jnp.asarray(params), jnp.asarray(x0)))
    jac = np.where(np.isfinite(jac), jac, 0.0)
    return np.array([np.max(np.abs(np.linalg.eigvals(j))) for j in jac])


def choose_path(
    model: Model, path: str, params: np.ndarray, starts: np.ndarray | None, grid: np.ndarray,
    step: float | None = None,
) -> PathChoice:  # fmt: skip
    """Whether this cohort runs on the fast path, with what step (``step``, else the model's
    declared one, else one from its Jacobian), and why."""
    if path == "accurate":
        return PathChoice(False, "the accurate path was asked for")
    declared = model.profile.fast
    if declared is None and path == "auto":
        return PathChoice(False, f"model '{model.id}' declares no fast path (ModelProfile.fast)")
    if declared is not None and declared.stiff:
        return PathChoice(False, f"model '{model.id}' is declared stiff; kept on the accurate path")
    rows = np.unique(np.linspace(0, params.shape[0] - 1, min(STIFFNESS_SAMPLE, params.shape[0])).astype(int))
    radius = float(np.max(spectral_radii(model, params[rows], None if starts is None else starts[rows])))
    source = "declared by the model"
    if step is not None:
        source = "asked for (fixed_dt)"
    elif declared is not None:
        step = float(declared.step)
    else:  # no declaration: a step well inside the stability region, at most the shortest interval
        shortest = float(np.min(np.diff(grid)))
        step = shortest if radius == 0 else min(shortest, 1.0 / radius)
        source = "from the Jacobian (no declaration)"
    stiffness = radius * step
    if stiffness > STABILITY_MARGIN:
        return PathChoice(
            False,
            f"stiff at the fast path's step: spectral radius x step = {stiffness:.3g} > {STABILITY_MARGIN} "
            f"(fixed-step RK4 is unstable there); kept on the accurate path",
            step,
            stiffness,
        )
    return PathChoice(True, f"fixed-step RK4, step {step:g} {source}", step, stiffness)


def tolerances(model: Model) -> dict[str, tuple[str, float]]:
    """Per observable: ``("absolute", tol)`` in its unit or ``("relative", rtol)``."""
    declared = model.profile.fast
    absolute: Mapping[str, float] = declared.tolerance if declared is not None else {}
    rtol = declared.rtol if declared is not None else 1e-3
    return {
        name: ("absolute", float(absolute[name])) if name in absolute else ("relative", float(rtol))
        for name in model.observable_names
    }


def compare(model: Model, fast: np.ndarray, accurate: np.ndarray) -> dict[str, float]:
    """Largest error per observable of ``fast`` against ``accurate`` (both ``(k, T, O)``):
    absolute where the model declares an absolute tolerance, else relative to the
    patient's largest magnitude. Patients the accurate path could not solve are skipped."""
    ok = np.all(np.isfinite(accurate), axis=(1, 2))
    errors: dict[str, float] = {}
    for j, (name, (kind, _)) in enumerate(tolerances(model).items()):
        if not ok.any():
            errors[name] = 0.0
            continue
        diff = np.abs(fast[ok, :, j] - accurate[ok, :, j])
        diff = np.where(np.isfinite(diff), diff, np.inf)
        if kind == "relative":
            scale = np.maximum(np.max(np.abs(accurate[ok, :, j]), axis=1, keepdims=True), 1e-300)
            diff = diff / scale
        errors[name] = float(np.max(diff))
    return errors


_FAST: dict[tuple[Any, ...], Callable[..., Any]] = {}


def _fast_compiled(model: Model, save_states: bool, shared: bool, given_y0: bool, precision: str) -> Callable[..., Any]:
    import jax
    import jax.numpy as jnp

    key = (id(model), model.id, model.version, save_states, shared, given_y0, precision)
    if key not in _FAST:
        run = fixed_step_solver(model, save_states, jnp.float32 if precision == "float32" else jnp.float64)

        def batch_last(params: Any, rates: Any, jumps: Any, grid0: Any, on_sample: Any, sched: Any,
                       first_slot: Any, y0: Any, n_out: int, uniform: float | None) -> Any:  # fmt: skip
            y0 = y0.T if given_y0 else None
            return run(params.T, rates, jumps, grid0, on_sample, sched, first_slot, n_out, y0, uniform)

        _FAST[key] = jax.jit(batch_last, static_argnames=("n_out", "uniform"))
    return _FAST[key]


def _batch_last(table: np.ndarray, dtype: Any) -> np.ndarray:
    """``(n, G, C)`` -> contiguous ``(G, C, n)``."""
    return np.ascontiguousarray(np.moveaxis(table, 0, -1), dtype=dtype)


class FastChunks:
    """Solve chunks on the fast path and check each against the accurate one.

    ``accurate(rows, matrix, rates, jumps, starts) -> out`` solves the given patients on
    the accurate path (the engine's compiled solve); arrays are patient-first.
    """

    def __init__(
        self,
        model: Model,
        choice: PathChoice,
        grid: np.ndarray,
        padded: np.ndarray,
        out_idx: np.ndarray,
        on_sample: np.ndarray,
        *,
        save_states: bool,
        shared: bool,
        given_y0: bool,
        precision: str,
        check_patients: int,
        on_check_failure: str,
        accurate: Callable[..., dict[str, Any]],
    ) -> None:
        self.model, self.choice, self.accurate = model, choice, accurate
        self.shared, self.check_patients, self.on_check_failure = shared, check_patients, on_check_failure
        self.precision = precision
        self.n_times = out_idx.size
        self.sched: Schedule = schedule(grid, out_idx, float(choice.step or 1.0))
        self.fn = _fast_compiled(model, save_states, shared, given_y0, precision)
        self.grid0, self.on_sample = float(grid[0]), on_sample
        self.points = min(padded.size, bucket(grid.size))  # the padded grid's points the schedule can reach

    def solve(
        self, k: int, rows: int, matrix: np.ndarray, rates: Any, jumps: Any, starts: np.ndarray
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Chunk ``k`` (its first ``rows`` rows real): its outputs and its check record."""
        import jax

        s = self.sched
        sched = (s.interval, s.t, s.h, s.ends, s.slot)
        dtype = np.float32 if self.precision == "float32" else np.float64
        # batch-last on the host: a transpose inside the jit is fused into every step's reads (~30 % slower)
        g = self.points
        if self.shared:
            last = (rates[: g - 1], jumps[:g])
        else:
            last = (_batch_last(rates[:, : g - 1], dtype), _batch_last(jumps[:, :g], dtype))
        out = jax.device_get(self.fn(matrix, *last, self.grid0, self.on_sample, sched, s.first_slot, starts,
                                     n_out=s.n_out, uniform=s.uniform))  # fmt: skip
        out = {name: np.array(v[:, : self.n_times], dtype=np.float64) for name, v in out.items()}
        out["code"] = np.where(np.all(np.isfinite(out["observables"]), axis=(1, 2)), 0, 4).astype(np.int32)
        failed = np.flatnonzero(np.asarray(out["code"])[:rows])
        if failed.size:
            self._splice(out, failed, matrix, rates, jumps, starts)
        pick = np.sort(np.random.default_rng([k, rows]).choice(rows, min(self.check_patients, rows), replace=False))
        reference = self._accurate_rows(pick, matrix, rates, jumps, starts)
        errors = compare(self.model, out["observables"][pick], reference["observables"])
        tol = tolerances(self.model)
        passed = all(errors[name] <= limit for name, (_, limit) in tol.items())
        record = {"chunks": 1, "rows": pick.tolist(), "max_error": errors, "passed": passed,
                  "rerun_non_finite": int(failed.size), "fallback_chunks": []}  # fmt: skip
        if not passed:
            worst = max(tol, key=lambda name: errors[name] / tol[name][1])
            message = (
                f"The fast path of chunk {k} differs from the accurate path by {errors[worst]:.3g} "
                f"({tol[worst][0]}) on '{worst}', above the model's tolerance {tol[worst][1]:g}"
            )
            if self.on_check_failure == "refuse":
                raise SimulationError(f"{message}; refusing (on_check_failure='refuse'). Use path='accurate'.")
            warnings.warn(f"{message}; the chunk was re-run on the accurate path.", FastPathWarning, stacklevel=4)
            out = self._accurate_rows(np.arange(matrix.shape[0]), matrix, rates, jumps, starts)
            record["fallback_chunks"] = [k]
        return out, record

    def _accurate_rows(
        self, pick: np.ndarray, matrix: np.ndarray, rates: Any, jumps: Any, starts: np.ndarray
    ) -> dict[str, Any]:
        if not self.shared:
            rates, jumps = rates[pick], jumps[pick]
        return self.accurate(matrix[pick], rates, jumps, starts[pick])

    def _splice(self, out: dict[str, Any], failed: np.ndarray, matrix: np.ndarray, rates: Any, jumps: Any,
                starts: np.ndarray) -> None:  # fmt: skip
        redo = self._accurate_rows(failed, matrix, rates, jumps, starts)
        for name, value in redo.items():
            out[name][failed] = value
