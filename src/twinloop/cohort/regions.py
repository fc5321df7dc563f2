"""Checking a region of a population (``condition`` in a product spec) before any draw.

``condition: {group: [adolescent], Vmx: {quantile: [0, 0.05]}, age: {lower: 12, upper: 15}}``:
each name is ``group``, a model parameter, a covariate, a latent or a derived quantity
of the population; a list gives levels (of ``group`` or a categorical covariate), a
mapping gives ``quantile: [low, high]`` or ``lower``/``upper`` bounds. A region no
patient can fall into is refused here, not after the run has started.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twinloop.errors import InputError

if TYPE_CHECKING:
    from twinloop.cohort.population import Population
    from twinloop.models.base import Model


def region_names(population: Population, model: Model) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """The level sets of categorical names (``group`` and categorical covariates) and the numeric names."""
    levels: dict[str, tuple[str, ...]] = {"group": tuple(g.name for g in population.groups)}
    numeric = set(model.parameter_names) | set(population.derived)
    for group in population.groups:
        numeric |= {n for n in group.typical if n not in model.parameter_names}
        for cov in group.covariates:
            if cov.distribution == "categorical":
                levels[cov.name] = tuple(dict.fromkeys((*levels.get(cov.name, ()), *cov.params["levels"])))
            elif cov.distribution != "constant" or isinstance(cov.params.get("value"), int | float):
                numeric.add(cov.name)
    return levels, numeric


def check_condition(population: Population, model: Model, condition: Mapping[Any, Any]) -> None:
    """Refuse a condition naming unknown quantities, unknown levels, unknown keys or an empty range."""
    if not isinstance(condition, Mapping):
        raise InputError(f"condition must map names to regions, e.g. {{group: [child]}}; got {condition!r}.")
    levels, numeric = region_names(population, model)
    accepted = sorted({*levels, *numeric})
    for name, spec in condition.items():
        where = f"condition.{name}"
        if not isinstance(name, str) or name not in accepted:
            raise InputError(
                f"{where}: {name!r} is not 'group', a parameter, a covariate or a derived quantity of population "
                f"'{population.name}'; accepted names: {accepted}."
            )
        if isinstance(spec, list | tuple):
            _check_levels(where, name, spec, levels)
        elif isinstance(spec, Mapping):
            if name not in numeric:
                raise InputError(f"{where} is categorical; give a list of levels from {list(levels[name])}.")
            _check_range(where, spec)
        else:
            raise InputError(
                f"{where} must be a list of levels or a mapping such as {{quantile: [0, 0.05]}} or "
                f"{{lower: 1, upper: 2}}; got {spec!r}."
            )


def _check_levels(where: str, name: str, spec: Any, levels: Mapping[str, tuple[str, ...]]) -> None:
    if name not in levels:
        raise InputError(f"{where} is numeric; give {{quantile: [low, high]}} or {{lower: ..., upper: ...}}.")
    unknown = [v for v in spec if not isinstance(v, str) or v not in levels[name]]
    if not spec or unknown:
        raise InputError(f"{where} lists {list(spec)!r}; the levels of '{name}' are {list(levels[name])}.")


def _check_range(where: str, spec: Mapping[Any, Any]) -> None:
    if "quantile" in spec:
        if set(spec) != {"quantile"}:
            raise InputError(
                f"{where} has unknown keys {sorted(map(str, set(spec) - {'quantile'}))}; give only quantile."
            )
        q = spec["quantile"]
        if not (
            isinstance(q, list | tuple) and len(q) == 2 and all(_is_number(v) for v in q) and 0 <= q[0] < q[1] <= 1
        ):
            raise InputError(f"{where}.quantile must be [low, high] with 0 <= low < high <= 1; got {q!r}.")
        return
    unknown = sorted(str(k) for k in set(spec) - {"lower", "upper"})
    if unknown or not spec:
        raise InputError(f"{where} has unknown keys {unknown}; accepted: ['lower', 'upper'] or ['quantile'].")
    for key in ("lower", "upper"):
        if key in spec and not (_is_number(spec[key]) and math.isfinite(spec[key])):
            raise InputError(f"{where}.{key} must be a finite number; got {spec[key]!r}.")
    if spec.get("lower", -math.inf) >= spec.get("upper", math.inf):
        raise InputError(f"{where}: lower ({spec['lower']!r}) must be below upper ({spec['upper']!r}).")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def parse_regions(raw: Any) -> list[dict[str, Any]]:
    """A population's ``regions`` list (as :meth:`Population.to_dict` writes it), checked."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InputError(f"regions must be a list of {{name, lower, upper, levels}}; got {raw!r}.")
    out = []
    for i, item in enumerate(raw):
        where = f"regions[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise InputError(f"{where} must be a mapping with a 'name'; got {item!r}.")
        unknown = sorted(str(k) for k in set(item) - {"name", "lower", "upper", "levels"})
        if unknown:
            raise InputError(f"{where} has unknown keys {unknown}; accepted: ['levels', 'lower', 'name', 'upper'].")
        bounds = [item.get("lower", -math.inf), item.get("upper", math.inf)]
        if not all(_is_number(b) for b in bounds) or not bounds[0] <= bounds[1]:
            raise InputError(f"{where}: lower and upper must be numbers with lower <= upper; got {bounds!r}.")
        levels = item.get("levels", [])
        if not isinstance(levels, list | tuple) or not all(isinstance(v, str) for v in levels):
            raise InputError(f"{where}.levels must be a list of names; got {levels!r}.")
        out.append(
            {"name": item["name"], "lower": float(bounds[0]), "upper": float(bounds[1]), "levels": tuple(levels)}
        )
    return out
