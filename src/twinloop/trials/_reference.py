"""Reference populations of a trial spec (the twins' prior, an external control pool) and
participant columns as numbers.

Both the ``prognostic`` and the ``external_control`` sections name a population that is
not the trial's own — typically one fitted to historical control data with ``twinloop
cohort from-real`` — and a list of participant columns to compare patients on. This module
parses those two fields the same way for both and turns the columns into a numeric matrix
(categorical columns one-hot, levels taken from the reference pool).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinloop.errors import InputError
from twinloop.trials.context import SpecContext

if TYPE_CHECKING:
    import pandas as pd

    from twinloop.cohort.population import Population


def known_keys(where: str, raw: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Refuse keys of the section ``where`` outside ``allowed``."""
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; the keys are {list(allowed)}. Remove or rename them.")


def section(where: str, raw: Any) -> Mapping[str, Any]:
    """``raw`` when it is a mapping; else :class:`InputError`."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be a mapping of settings; got {raw!r}.")
    return raw


def population(where: str, raw: Any, ctx: SpecContext) -> Population:
    """The population a section names: ``default`` (the model's), a YAML path (relative to the
    spec's folder) or an inline mapping, for the trial's model."""
    from twinloop._paths import spec_path
    from twinloop.cohort.population import Population

    if raw == "default":
        return Population.default(ctx.model_id)
    try:
        if isinstance(raw, Mapping):
            pop = Population.from_dict({"model": ctx.model_id, **raw})
        elif isinstance(raw, str):
            path = spec_path(ctx.base_dir or Path.cwd(), raw, where)
            if not path.is_file():
                raise InputError(f"{where} is {raw!r}, but '{path}' is not a file; give a population YAML.")
            pop = Population.from_yaml(path)
        else:
            raise InputError(f"{where} must be 'default', a population YAML path or an inline mapping; got {raw!r}.")
    except InputError as e:
        raise InputError(f"{where}: {e}") from e
    if pop.model_id != ctx.model_id:
        raise InputError(
            f"{where} is a population of model '{pop.model_id}' but the trial uses '{ctx.model_id}'; "
            "give a population fitted for the trial's model."
        )
    return pop


def population_to_dict(pop: Population) -> Any:
    """``'default'`` for the model's default population, else the expanded mapping."""
    from twinloop.cohort.population import Population

    if pop.content_hash() == Population.default(pop.model_id).content_hash():
        return "default"
    return pop.to_dict()


def columns(where: str, raw: Any, ctx: SpecContext, default: Sequence[str]) -> tuple[str, ...]:
    """A non-empty list of distinct participant columns (covariates or baseline measures)."""
    if raw is None:
        raw = list(default)
    if isinstance(raw, str) or not isinstance(raw, Sequence) or not raw:
        raise InputError(f"{where} must be a non-empty list of column names from {list(ctx.columns)}; got {raw!r}.")
    out: list[str] = []
    for i, name in enumerate(raw):
        if name not in ctx.columns:
            raise InputError(
                f"{where}[{i}] is {name!r}; expected one of the covariates or baseline measures {list(ctx.columns)}."
            )
        if name in out:
            raise InputError(f"{where}[{i}]: {name!r} is listed twice; list each column once.")
        out.append(str(name))
    return tuple(out)


def positive_int(where: str, raw: Any, default: int, *, lower: int = 1, upper: int = 1_000_000) -> int:
    """An integer in [lower, upper] (``default`` when absent)."""
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or not lower <= raw <= upper:
        raise InputError(f"{where} must be an integer from {lower} to {upper}; got {raw!r}.")
    return int(raw)


def choice(where: str, raw: Any, options: Sequence[str], default: str) -> str:
    """One of ``options`` (``default`` when absent)."""
    if raw is None:
        return default
    if raw not in options:
        raise InputError(f"{where} is {raw!r}; expected one of {list(options)}.")
    return str(raw)


def seed(where: str, raw: Any) -> int | None:
    """An optional non-negative integer seed."""
    if raw is None:
        return None
    return positive_int(where, raw, 0, lower=0, upper=2**63 - 1)


def encode(
    reference: pd.DataFrame, others: Sequence[pd.DataFrame], names: Sequence[str], *, all_levels: bool = False
) -> tuple[list[np.ndarray], list[str]]:
    """``names`` of ``reference`` and of each frame in ``others`` as float matrices with the same
    columns, and the columns' labels: numeric columns as they are (NaN kept), any other column
    one-hot (first level dropped) over the levels seen in ``reference`` (``all_levels``: in any
    frame); a level outside those is all zeros, a missing value NaN."""
    import pandas as pd

    frames = [reference, *others]
    blocks: list[list[np.ndarray]] = [[] for _ in frames]
    labels: list[str] = []
    for name in names:
        col = reference[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            for out, frame in zip(blocks, frames, strict=True):
                out.append(pd.to_numeric(frame[name], errors="coerce").to_numpy(float)[:, None])
            labels.append(name)
            continue
        seen = pd.concat([f[name] for f in frames]) if all_levels else col
        levels = sorted({str(v) for v in seen.dropna().unique()})
        labels += [f"{name}={v}" for v in (levels[1:] if len(levels) > 1 else levels)]
        for out, frame in zip(blocks, frames, strict=True):
            values = frame[name]
            text = values.astype(str).to_numpy()
            onehot = (text[:, None] == np.asarray(levels, dtype=object)[None, :]).astype(float)
            onehot[values.isna().to_numpy()] = np.nan
            out.append(onehot[:, 1:] if len(levels) > 1 else onehot)
    matrices = [np.hstack(b) if b else np.empty((len(f), 0)) for b, f in zip(blocks, frames, strict=True)]
    return matrices, labels
