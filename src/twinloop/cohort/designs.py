"""Parameter-space exploration: Sobol and Latin hypercube designs over parameter
bounds (``scipy.stats.qmc``), uniform or log-uniform per parameter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import qmc

from twinloop.errors import InputError
from twinloop.models.base import Model


def design(
    model: Model,
    n: int,
    *,
    kind: str = "sobol",
    vary: Sequence[str] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    log_scale: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """An ``(n, n_params)`` parameter matrix: ``vary`` spans its bounds by a space-filling
    design, the other parameters keep their defaults.

    Arguments:
        kind: ``"sobol"`` (scrambled; ``n`` should be a power of two) or ``"lhs"``.
        vary: parameters to explore (default: all but derived ones).
        bounds: per-parameter (lower, upper), default the model's declared bounds.
        log_scale: spread log-uniformly when both bounds are > 0.
    """
    names = list(vary) if vary is not None else [p for p in model.parameter_names if p not in model.derived_parameters]
    unknown = [v for v in names if v not in model.parameter_names]
    if unknown:
        raise InputError(f"Cannot vary {unknown}: not parameters of model '{model.id}'.")
    if n < 1:
        raise InputError(f"A design needs n >= 1 points; got {n}.")
    declared = {p.name: (p.lower, p.upper) for p in model.parameters}
    lo = np.array([(bounds or {}).get(v, declared[v])[0] for v in names], dtype=np.float64)
    hi = np.array([(bounds or {}).get(v, declared[v])[1] for v in names], dtype=np.float64)
    if np.any(hi <= lo):
        raise InputError(f"Every upper bound must exceed its lower bound; check {names}.")
    if kind == "sobol":
        unit = qmc.Sobol(len(names), scramble=True, seed=seed).random(n)
    elif kind == "lhs":
        unit = qmc.LatinHypercube(len(names), seed=seed).random(n)
    else:
        raise InputError(f"Unknown design {kind!r}; choose 'sobol' or 'lhs'.")
    logged = log_scale & (lo > 0)
    lo_t, hi_t = (
        np.where(logged, np.log(np.where(logged, lo, 1.0)), lo),
        np.where(logged, np.log(np.where(logged, hi, 1.0)), hi),
    )
    values = qmc.scale(unit, lo_t, hi_t)
    values = np.where(logged, np.exp(values), values)
    matrix = np.tile(model.default_parameters, (n, 1))
    for j, v in enumerate(names):
        matrix[:, model.parameter_names.index(v)] = values[:, j]
    return matrix
