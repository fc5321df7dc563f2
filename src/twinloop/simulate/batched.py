"""The default backend: explicit Runge-Kutta on a batch-last state, per-patient step sizes.

The cohort's state is one ``(n_states, n_patients)`` array, so every operation of the
model's right-hand side runs over contiguous patients (SIMD-friendly; a vmapped solve
puts patients first and turns each ``x[i]`` into a strided gather, measured 4-11x
slower). Every patient still has its own adaptive step size: inside a grid interval,
each loop iteration tries one step per unfinished patient, accepts or rejects it by
that patient's error norm, and patients that reached the interval's end wait. The
Butcher tableaus are diffrax's. Forward-mode differentiable (``jax.jacfwd``); use the
``diffrax`` backend for reverse mode or implicit solvers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp

from twinloop.models.base import Model

TABLEAU_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8,
                   "bosh3": diffrax.Bosh3, "heun": diffrax.Heun}  # fmt: skip
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


def _rk_step(f: Callable[[Any, Any], Any], tableau: Any, t: Any, x: Any, dt: Any, k1: Any) -> tuple[Any, Any, Any]:
    """One explicit RK step of size ``dt`` (per patient): ``x1``, its error, the last stage.

    For first-same-as-last tableaus the last stage is ``f(x1)``.
    """
    ks = [k1]
    for a_row, c in zip(tableau.a_lower, tableau.c, strict=True):
        incr = sum(float(a) * k for a, k in zip(a_row, ks, strict=False) if float(a) != 0.0)
        ks.append(f(t + float(c) * dt, x + dt * incr))
    x1 = x + dt * sum(float(b) * k for b, k in zip(tableau.b_sol, ks, strict=False) if float(b) != 0.0)
    err = dt * sum(float(e) * k for e, k in zip(tableau.b_error, ks, strict=False) if float(e) != 0.0)
    return x1, err, ks[-1]


def _is_fsal(tableau: Any) -> bool:
    last = tableau.a_lower[-1]
    return (
        len(last) == len(tableau.b_sol) - 1
        and float(tableau.c[-1]) == 1.0
        and all(float(a) == float(b) for a, b in zip(last, tableau.b_sol[:-1], strict=True))
    )


def _step_judge(rtol: float, atol: float, order: int, adaptive: bool) -> Callable[..., tuple[Any, Any, Any]]:
    """``judge(x, x_new, err, h, dt, active, span, code) -> (accept, dt, code)``: accept or
    reject each patient's step by its error norm, propose its next step size and flag
    non-finite states (code 4) and collapsed step sizes (code 2)."""
    exponent = -1.0 / (order + 1)

    def judge(x: Any, x_new: Any, err: Any, h: Any, dt: Any, active: Any, span: Any, code: Any) -> tuple[Any, ...]:
        if adaptive:
            scale = atol + rtol * jnp.maximum(jnp.abs(x), jnp.abs(x_new))
            ratio = jnp.sqrt(jnp.mean((err / scale) ** 2, axis=0))
            accept = active & (ratio <= 1.0)
            factor = jnp.clip(SAFETY * jnp.where(ratio > 0, ratio, 1e-10) ** exponent, MIN_FACTOR, MAX_FACTOR)
            clipped = h < dt
            dt_next = jnp.where(accept & clipped, jnp.maximum(dt, h * factor), h * factor)
            dt = jnp.where(active, dt_next, dt)
        else:
            accept = active
        finite = jnp.all(jnp.isfinite(x_new), axis=0)
        code = jnp.where(active & ~finite, 4, code)
        code = jnp.where(active & (h < 1e-12 * jnp.maximum(span, 1.0)) & ~accept, 2, code)
        return accept & finite, dt, code

    return judge


def interval_integrator(
    model: Model, solver: str, rtol: float, atol: float, fixed_dt: float | None, max_steps: int
) -> Callable[..., tuple[Any, Any, Any]]:
    """``integrate(x, u, p, t0, t1, dt) -> (x(t1), dt_next, code)`` for a batch-last state."""
    tableau = TABLEAU_SOLVERS[solver].tableau
    order = int(TABLEAU_SOLVERS[solver]().order(None) or 1)
    fsal = _is_fsal(tableau)
    judge = _step_judge(rtol, atol, order, fixed_dt is None)

    def integrate(x: Any, u: Any, p: Any, t0: Any, t1: Any, dt: Any) -> tuple[Any, Any, Any]:
        def f(t: Any, y: Any) -> Any:
            return model.rhs(t, y, u, p)

        span = t1 - t0
        n = x.shape[-1]
        t = jnp.full((n,), t0)
        if fixed_dt is not None:
            dt = jnp.full((n,), span / jnp.ceil(span / fixed_dt - 1e-9))
        k1 = f(t, x)

        def cond(state: tuple[Any, ...]) -> Any:
            t, _, _, _, code, steps = state
            return jnp.any((t < t1) & (code == 0)) & (steps < max_steps)

        def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
            t, x, dt, k1, code, steps = state
            active = (t < t1) & (code == 0)
            h = jnp.minimum(dt, t1 - t)
            h = jnp.where(active, h, span)  # finished patients take a harmless dummy step
            x_new, err, f_new = _rk_step(f, tableau, t, x, h, k1)
            accept, dt, code = judge(x, x_new, err, h, dt, active, span, code)
            reached = jnp.where(t1 - (t + h) <= 1e-12 * jnp.maximum(jnp.abs(t1), 1.0), t1, t + h)
            t = jnp.where(accept, reached, t)
            x = jnp.where(accept, x_new, x)
            k1 = jnp.where(accept, f_new if fsal else f(t, x), k1)
            return t, x, dt, k1, code, steps + 1

        code0 = jnp.zeros((n,), dtype=jnp.int32)
        t, x, dt, _, code, _ = jax.lax.while_loop(cond, body, (t, x, dt, k1, code0, jnp.asarray(0)))
        code = jnp.where((code == 0) & (t < t1), 1, code)
        return x, dt, code

    return integrate


def async_grid_solver(
    model: Model, solver: str, rtol: float, atol: float, fixed_dt: float | None, max_steps: int, save_states: bool
) -> Callable[..., dict[str, Any]]:
    """Integrate a batch-last cohort over the whole grid with each patient on its own clock.

    The per-interval scheme loops in every grid interval until its slowest patient is
    done, so a cohort pays, interval by interval, for whichever patient needs small steps
    there. Here one loop advances every patient by one step of its own interval; a
    patient that reaches a grid point gets its boluses, discrete update and output
    there and moves on. The loop runs for the most steps any single patient needs.

    Returns ``run(params (P, n), rates (G-1, R[, n]), jumps (G, B[, n]), grid, on_sample,
    out_of_grid, n_out, y0 (S, n) or None) -> {"observables": (n, T, O)[, "states": (n, T, S)], "code": (n,)}``
    where ``out_of_grid[g]`` is the output index recorded at grid point ``g`` (or -1) and
    ``n_out`` (static) the number of outputs.
    """
    tableau = TABLEAU_SOLVERS[solver].tableau
    order = int(TABLEAU_SOLVERS[solver]().order(None) or 1)
    fsal = _is_fsal(tableau)
    judge = _step_judge(rtol, atol, order, fixed_dt is None)

    def run(
        params: Any, rates: Any, jumps: Any, grid: Any, on_sample: Any, out_of_grid: Any, n_out: int, y0: Any = None
    ) -> dict[str, Any]:
        p = model.param_map(params)
        n = params.shape[-1]
        cols = jnp.arange(n)
        n_grid = grid.shape[0]
        per_patient = rates.ndim == 3

        def at(table: Any, idx: Any) -> Any:  # (G, C[, n]) gathered per patient -> (C, n)
            return table[idx, :, cols].T if per_patient else table[idx].T

        def actions(x: Any, g: Any, u_prev: Any) -> Any:
            """Model events, boluses and discrete update at grid point ``g`` (per patient)."""
            if model.events:
                x = model.apply_events(x, grid[g], p)
            x = model.apply_boluses(x, at(jumps, g), p)
            if model.discrete_update is not None:
                u_next = at(rates, jnp.minimum(g, n_grid - 2))
                x = jnp.where(on_sample[g], model.discrete_update(x, u_prev, u_next, p), x)
            return x

        def record(out: dict[str, Any], x: Any, g: Any, mask: Any) -> dict[str, Any]:
            slot = out_of_grid[g]
            keep = mask & (slot >= 0)
            row = jnp.where(keep, slot, n_out)  # n_out is a scratch row, dropped at the end
            new = {"observables": out["observables"].at[cols, row].set(model.observe(x, p).T)}
            if save_states:
                new["states"] = out["states"].at[cols, row].set(x.T)
            return new

        x = jnp.asarray(model.initial_state(p) if y0 is None else y0, dtype=jnp.float64)
        g0 = jnp.zeros(n, dtype=jnp.int32)
        u0 = jnp.zeros_like(at(rates, g0))
        x = actions(x, g0, u0)
        out = {"observables": jnp.full((n, n_out + 1, len(model.observables)), jnp.nan)}
        if save_states:
            out["states"] = jnp.full((n, n_out + 1, x.shape[0]), jnp.nan)
        out = record(out, x, g0, jnp.ones(n, dtype=bool))
        if model.events:
            x = model.apply_events(x, grid[g0], p, after=True)
        t = jnp.full((n,), grid[0])
        dt0 = jnp.full((n,), grid[1] - grid[0])
        if fixed_dt is not None:
            dt0 = jnp.full((n,), fixed_dt)

        def rhs(t: Any, y: Any, u: Any) -> Any:
            return model.rhs(t, y, u, p)

        k1 = rhs(t, x, at(rates, g0))
        zero = jnp.zeros(n, dtype=jnp.int32)

        def cond(state: tuple[Any, ...]) -> Any:
            g, code = state[0], state[6]
            return jnp.any((g < n_grid - 1) & (code == 0))

        def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
            g, t, x, dt, k1, out, code, steps = state
            active = (g < n_grid - 1) & (code == 0)
            gi = jnp.minimum(g, n_grid - 2)
            u = at(rates, gi)
            t1 = grid[gi + 1]
            span = t1 - grid[gi]
            h = jnp.minimum(dt, t1 - t)
            if fixed_dt is not None:
                h = jnp.minimum(span / jnp.ceil(span / fixed_dt - 1e-9), t1 - t)
            h = jnp.where(active, h, 1.0)

            def f(tt: Any, y: Any) -> Any:
                return rhs(tt, y, u)

            x_new, err, f_new = _rk_step(f, tableau, t, x, h, k1)
            accept, dt, code = judge(x, x_new, err, h, dt, active, span, code)
            reached = t1 - (t + h) <= 1e-12 * jnp.maximum(jnp.abs(t1), 1.0)
            t = jnp.where(accept, jnp.where(reached, t1, t + h), t)
            x = jnp.where(accept, x_new, x)
            crossed = accept & reached
            steps = jnp.where(crossed, 0, steps + active.astype(jnp.int32))
            code = jnp.where(active & (steps >= max_steps), 1, code)
            g = jnp.where(crossed, g + 1, g)
            x_at = actions(x, g, u)
            x = jnp.where(crossed, x_at, x)
            out = record(out, x, g, crossed)
            if model.events:
                x = jnp.where(crossed, model.apply_events(x, grid[g], p, after=True), x)
            u_next = at(rates, jnp.minimum(g, n_grid - 2))
            needs_fresh = crossed | (not fsal)  # a fresh derivative after an event or for a non-FSAL tableau
            k1 = jnp.where(needs_fresh, rhs(t, x, u_next), jnp.where(accept, f_new, k1))
            return g, t, x, dt, k1, out, code, steps

        state = (g0, t, x, dt0, k1, out, zero, zero)
        g, _, _, _, _, out, code, _ = jax.lax.while_loop(cond, body, state)
        code = jnp.where((code == 0) & (g < n_grid - 1), 1, code)
        result = {name: value[:, :n_out] for name, value in out.items()}
        finite = jnp.all(jnp.isfinite(result["observables"]), axis=(1, 2))
        result["code"] = jnp.where((code == 0) & ~finite, 4, code)
        return result

    return run
