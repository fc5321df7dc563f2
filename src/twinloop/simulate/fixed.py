"""The fast path's scheme: classic Runge-Kutta 4 with fixed steps in one ``lax.scan``.

Each interval of the integration grid (the rates are constant on it) is cut into the
fewest equal steps no longer than the model's declared step; the whole cohort takes the
same steps, so the loop carries no per-patient step sizes, masks or rejections, and the
state is batch-last ``(n_states, n_patients)``. At the end of each interval the grid
point's events, boluses and discrete update run, as on the accurate path, and the
outputs are written into a buffer carried by the scan. ``float32`` halves the memory
traffic (about twice as fast on a CPU); the engine's self-check bounds what it costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from twinloop.models.base import Model


def bucket(n: int, minimum: int = 16) -> int:
    """``n`` rounded up to a size with at most 1/16 padding (16, 17, ..., 32, 34, ...),
    so runs whose lengths differ slightly reuse one compiled scan."""
    n = max(int(n), minimum)
    unit = max(1, 1 << max(0, n.bit_length() - 5))
    return -(-n // unit) * unit


@dataclass(frozen=True)
class Schedule:
    """The steps of one run, shared by every patient, padded with empty steps.

    ``interval[s]``: the grid interval step ``s`` lies in; ``t[s]``, ``h[s]``: its start
    and size (padding steps go on past the end); ``ends[s]``: it ends its interval; ``slot[s]``: the output
    row recorded at its end (``n_out`` for none); ``n_out``: the output rows (padded).
    """

    interval: np.ndarray
    t: np.ndarray
    h: np.ndarray
    ends: np.ndarray
    slot: np.ndarray
    first_slot: int
    n_out: int
    uniform: float | None = None  # the one step size when all are equal (compiled in: ~2x faster)


def schedule(grid: np.ndarray, out_idx: np.ndarray, step: float) -> Schedule:
    """Fixed steps of at most ``step`` over ``grid``; ``out_idx``: grid indices of the outputs."""
    spans = np.diff(grid)
    counts = np.maximum(1, np.ceil(spans / step - 1e-9).astype(np.int64))
    interval = np.repeat(np.arange(spans.size), counts)
    offset = np.arange(interval.size) - np.repeat(np.cumsum(counts) - counts, counts)
    h = (spans / counts)[interval]
    t = grid[interval] + offset * h
    ends = offset == counts[interval] - 1
    n_out = bucket(out_idx.size)
    slot_of_point = np.full(grid.size, n_out, dtype=np.int64)
    slot_of_point[out_idx] = np.arange(out_idx.size)
    slot = np.where(ends, slot_of_point[interval + 1], n_out)
    size = bucket(interval.size)
    pad = size - interval.size
    last = spans.size - 1
    return Schedule(
        interval=np.r_[interval, np.full(pad, last)].astype(np.int32),
        t=np.r_[t, np.full(pad, grid[-1])],
        h=np.r_[h, np.full(pad, h[-1])],  # past the end, recorded nowhere (tiny steps run slowly)
        ends=np.r_[ends, np.zeros(pad, dtype=bool)],
        slot=np.r_[slot, np.full(pad, n_out)].astype(np.int32),
        first_slot=int(slot_of_point[0]),
        n_out=n_out,
        uniform=float(h[0]) if np.all(np.abs(h - h[0]) <= 1e-12 * abs(h[0])) else None,
    )


def rk4(f: Callable[[Any, Any], Any], t: Any, x: Any, h: Any) -> Any:
    k1 = f(t, x)
    k2 = f(t + 0.5 * h, x + (0.5 * h) * k1)
    k3 = f(t + 0.5 * h, x + (0.5 * h) * k2)
    k4 = f(t + h, x + h * k3)
    return x + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)


def fixed_step_solver(model: Model, save_states: bool, dtype: Any) -> Callable[..., dict[str, Any]]:
    """``run(params (P, n), rates (G-1, R[, n]), jumps (G, B[, n]), on_sample (G,),
    interval, t, h, ends, slot (S,), first_slot, y0 (S, n) or None, uniform) -> {"observables":
    (n, T, O)[, "states": (n, T, S)]}`` with ``T = n_out`` rows (the caller slices the
    real ones and flags non-finite patients). ``first_slot`` is the output row of the first grid
    point (``n_out`` if it is not an output); ``n_out`` is static."""

    def run(
        params: Any, rates: Any, jumps: Any, grid0: Any, on_sample: Any, sched: tuple[Any, ...],
        first_slot: Any, n_out: int, y0: Any = None, uniform: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        p = model.param_map(params.astype(dtype))
        rates, jumps = rates.astype(dtype), jumps.astype(dtype)
        n = params.shape[-1]
        n_grid = jumps.shape[0]

        def at(table: Any, k: Any) -> Any:
            row = jax.lax.dynamic_index_in_dim(table, k, keepdims=False)
            return row if row.ndim == 2 else jnp.broadcast_to(row[:, None], (row.shape[0], n))

        def actions(x: Any, g: Any, t: Any, u_prev: Any, u_next: Any) -> Any:
            if model.events:
                x = model.apply_events(x, t, p)
            x = model.apply_boluses(x, at(jumps, g), p)
            if model.discrete_update is not None:
                x = jnp.where(on_sample[g], model.discrete_update(x, u_prev, u_next, p), x)
            return x

        def after(x: Any, t: Any) -> Any:
            return model.apply_events(x, t, p, after=True) if model.events else x

        def record(buffers: dict[str, Any], x: Any, slot: Any) -> dict[str, Any]:
            new = {"observables": buffers["observables"].at[slot].set(model.observe(x, p).astype(dtype))}
            if save_states:
                new["states"] = buffers["states"].at[slot].set(x)
            return new

        x = jnp.asarray(model.initial_state(p) if y0 is None else y0).astype(dtype)
        u0 = at(rates, 0)
        x = actions(x, 0, grid0, jnp.zeros_like(u0), u0)
        buffers = {"observables": jnp.full((n_out + 1, len(model.observables), n), jnp.nan, dtype=dtype)}
        if save_states:
            buffers["states"] = jnp.full((n_out + 1, x.shape[0], n), jnp.nan, dtype=dtype)
        buffers = record(buffers, x, first_slot)
        x = after(x, grid0)

        def step(carry: tuple[Any, Any], s: tuple[Any, ...]) -> tuple[tuple[Any, Any], None]:
            x, buffers = carry
            k, t, h, ends, slot = s
            if uniform is not None:  # a constant step lets XLA fuse the stages (a traced one costs ~2x)
                h = jnp.asarray(uniform, dtype=dtype)
            u = at(rates, k)
            x = rk4(lambda tt, y: model.rhs(tt, y, u, p), t, x, h)
            g, t_end = k + 1, t + h
            u_next = at(rates, jnp.minimum(g, n_grid - 2))
            x = jax.lax.cond(ends, lambda x: actions(x, g, t_end, u, u_next), lambda x: x, x)
            buffers = record(buffers, x, slot)
            if model.events:
                x = jax.lax.cond(ends, lambda x: after(x, t_end), lambda x: x, x)
            return (x, buffers), None

        xs = (sched[0], sched[1].astype(dtype), sched[2].astype(dtype), sched[3], sched[4])
        (_, buffers), _ = jax.lax.scan(step, (x, buffers), xs)
        return {name: jnp.moveaxis(value[:n_out], -1, 0) for name, value in buffers.items()}

    return run
