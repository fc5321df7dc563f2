"""The population specification: covariates, NLME parameter model, constraints.

A population is written in YAML (or built in Python) and validated on load, with
errors that name the field, the value and what was expected::

    model: tgi-claret
    name: nsclc-first-line
    covariates:
      age: {distribution: normal, mean: 63, sd: 9, lower: 18, upper: 90, unit: a}
      sex: {distribution: categorical, levels: {female: 0.4, male: 0.6}}
      weight: {distribution: lognormal, median: 72, cv: 0.2, unit: kg}
    typical: {KL: 0.00214, KD: 5.8e-5, lam: 0.006, y0: 90, CL: 1200, V: 150}
    omega: {KL: 0.556, KD: 0.540, lam: 0.450, y0: 0.25}   # variances, or
    # omega: {names: [KL, KD], matrix: [[0.556, 0.1], [0.1, 0.540]]}
    effects:
      - {parameter: CL, covariate: weight, kind: power, reference: 70, exponent: 0.75}
      - {parameter: KD, covariate: biomarker, kind: range, lower: 0.6, upper: 1.0, inside: 1.0, outside: 0.05}
    constraints:
      - {expression: "log(2) / KL", lower: 30, upper: 3650, name: doubling_time_d}
    output_constraints:
      - {observable: sum_of_diameters, statistic: final, lower: 1, upper: 1000}
    groups:                       # optional strata with their own covariates/typical values
      child: {fraction: 0.5, covariates: {...}, typical: {...}}

``derived: {name: expression}`` adds quantities computed from the sampled parameters
and covariates (e.g. a carbohydrate ratio from a dosing rule and the basal rate).

Parameters are ``typical * prod(covariate effects) * exp(eta)`` with
``eta ~ N(0, Omega)``. Names in ``typical`` that are not model parameters are latent
quantities (e.g. a carbohydrate ratio, or a steady-state production rate the model's
``derive`` rule uses); they are sampled alike and reported with the covariates.
Parameters not named keep the model default; derived parameters are computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinloop.cohort.expressions import Formula
from twinloop.errors import InputError

DISTRIBUTIONS = ("normal", "lognormal", "uniform", "categorical", "constant")
EFFECT_KINDS = ("power", "exponential", "categorical", "range")
STATISTICS = ("min", "max", "mean", "final", "initial")


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InputError(f"{where} must be a number; got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be a number; got {value!r}.") from None
    if not math.isfinite(number):
        raise InputError(f"{where} must be finite; got {value!r}.")
    return number


def _bound(where: str, value: Any, default: float) -> float:
    """An optional bound: absent (or +-inf, as written back by ``to_dict``) means none."""
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return default
    return _number(where, value)


def _positive(where: str, value: Any) -> float:
    number = _number(where, value)
    if number <= 0:
        raise InputError(f"{where} must be > 0; got {value!r}.")
    return number


def _factor(where: str, value: Any) -> float:
    number = _number(where, value)
    if number < 0:
        raise InputError(f"{where} must be >= 0 (a multiplicative factor); got {value!r}.")
    return number


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(f"{where} must be a mapping (key: value); got {type(value).__name__} {value!r}.")
    return value


def _known_keys(where: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}.")


@dataclass(frozen=True)
class Covariate:
    """One covariate distribution, e.g. age ~ uniform(12, 18) years."""

    name: str
    distribution: str
    params: Mapping[str, Any]
    unit: str = "1"
    lower: float = -math.inf
    upper: float = math.inf

    @classmethod
    def parse(cls, name: str, raw: Any) -> Covariate:
        where = f"covariates.{name}"
        raw = _mapping(where, raw)
        _known_keys(
            where,
            raw,
            {"distribution", "mean", "sd", "median", "cv", "low", "high", "levels", "value", "unit", "lower", "upper"},
        )
        dist = raw.get("distribution")
        if dist not in DISTRIBUTIONS:
            raise InputError(f"{where}.distribution is {dist!r}; expected one of {', '.join(DISTRIBUTIONS)}.")
        params: dict[str, Any] = {}
        if dist == "normal":
            params = {"mean": _number(f"{where}.mean", raw.get("mean")), "sd": _positive(f"{where}.sd", raw.get("sd"))}
        elif dist == "lognormal":
            params = {
                "median": _positive(f"{where}.median", raw.get("median")),
                "cv": _positive(f"{where}.cv", raw.get("cv")),
            }
        elif dist == "uniform":
            low, high = _number(f"{where}.low", raw.get("low")), _number(f"{where}.high", raw.get("high"))
            if not low < high:
                raise InputError(f"{where}: low ({low}) must be below high ({high}).")
            params = {"low": low, "high": high}
        elif dist == "categorical":
            levels = _mapping(f"{where}.levels", raw.get("levels"))
            probs = {str(k): _number(f"{where}.levels.{k}", v) for k, v in levels.items()}
            if not probs or any(p < 0 for p in probs.values()) or not math.isclose(sum(probs.values()), 1.0):
                raise InputError(f"{where}.levels must be probabilities >= 0 summing to 1; got {probs}.")
            params = {"levels": probs}
        else:
            params = {"value": raw.get("value")}
        lower = _number(f"{where}.lower", raw["lower"]) if "lower" in raw else -math.inf
        upper = _number(f"{where}.upper", raw["upper"]) if "upper" in raw else math.inf
        return cls(name, str(dist), params, str(raw.get("unit", "1")), lower, upper)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws; continuous ones truncated to [lower, upper] by redrawing."""
        p = self.params
        if self.distribution == "categorical":
            levels = list(p["levels"])
            return np.asarray(levels, dtype=object)[rng.choice(len(levels), size=n, p=list(p["levels"].values()))]
        if self.distribution == "constant":
            return np.full(n, p["value"])
        out = self._draw(n, rng)
        for _ in range(1000):
            bad = (out < self.lower) | (out > self.upper)
            if not bad.any():
                return out
            out[bad] = self._draw(int(bad.sum()), rng)
        raise InputError(f"Covariate '{self.name}': its bounds [{self.lower}, {self.upper}] exclude almost all draws.")

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        if self.distribution == "normal":
            return rng.normal(p["mean"], p["sd"], n)
        if self.distribution == "lognormal":
            return p["median"] * np.exp(rng.normal(0.0, math.sqrt(math.log1p(p["cv"] ** 2)), n))
        return rng.uniform(p["low"], p["high"], n)

    def fitted(self, values: np.ndarray) -> Covariate:
        """The same family and bounds with parameters estimated from observed ``values``
        (moments; level frequencies; the range for uniform). Missing values are ignored."""
        if self.distribution == "categorical":
            text = [str(v) for v in values if v is not None and v == v]
            if not text:
                raise InputError(f"Covariate '{self.name}' has no observed values to fit.")
            levels, counts = np.unique(text, return_counts=True)
            params: dict[str, Any] = {
                "levels": {str(lv): float(c) / len(text) for lv, c in zip(levels, counts, strict=True)}
            }
            return Covariate(self.name, self.distribution, params, self.unit, self.lower, self.upper)
        x = finite_numbers(values)
        if x.size < 2:
            raise InputError(
                f"Covariate '{self.name}' needs at least two observed numeric values to fit; got {x.size}."
            )
        if self.distribution == "normal":
            params = {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) or 1e-9}
        elif self.distribution == "lognormal":
            if np.any(x <= 0):
                raise InputError(f"Covariate '{self.name}' is log-normal but has observed values <= 0.")
            logs = np.log(x)
            params = {"median": float(np.exp(logs.mean())), "cv": float(math.sqrt(math.expm1(logs.var(ddof=1))))}
        elif self.distribution == "uniform":
            params = {"low": float(x.min()), "high": float(x.max())}
        else:
            params = dict(self.params)
        return Covariate(self.name, self.distribution, params, self.unit, self.lower, self.upper)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"distribution": self.distribution, **self.params, "unit": self.unit}
        if math.isfinite(self.lower):
            out["lower"] = self.lower
        if math.isfinite(self.upper):
            out["upper"] = self.upper
        return out


@dataclass(frozen=True)
class CovariateEffect:
    """A multiplicative covariate effect on a parameter's typical value.

    ``power``: ``(cov / reference) ** exponent``; ``exponential``:
    ``exp(coefficient * (cov - reference))``; ``categorical``: ``factors[level]``;
    ``range``: ``inside`` where ``lower <= cov <= upper`` and ``outside`` elsewhere (either
    bound may be left open; a factor of 0 switches the parameter off, e.g. a drug effect
    only in patients whose biomarker lies in a range).
    """

    parameter: str
    covariate: str
    kind: str
    reference: float = 1.0
    exponent: float = 0.0
    factors: Mapping[str, float] = field(default_factory=dict)
    lower: float = -math.inf
    upper: float = math.inf
    inside: float = 1.0
    outside: float = 1.0

    @classmethod
    def parse(cls, i: int, raw: Any) -> CovariateEffect:
        where = f"effects[{i}]"
        raw = _mapping(where, raw)
        kind = raw.get("kind")
        if kind not in EFFECT_KINDS:
            raise InputError(f"{where}.kind is {kind!r}; expected one of {', '.join(EFFECT_KINDS)}.")
        common = {"parameter", "covariate", "kind"}
        if kind == "range":
            _known_keys(where, raw, common | {"lower", "upper", "inside", "outside"})
        else:
            _known_keys(where, raw, common | {"reference", "exponent", "coefficient", "factors"})
        for key in ("parameter", "covariate"):
            if not isinstance(raw.get(key), str):
                raise InputError(f"{where}.{key} must name a {key}; got {raw.get(key)!r}.")
        if kind == "categorical":
            factors = {
                str(k): _positive(f"{where}.factors.{k}", v) for k, v in _mapping(where, raw.get("factors")).items()
            }
            return cls(raw["parameter"], raw["covariate"], kind, factors=factors)
        if kind == "range":
            return cls._range(where, raw)
        coefficient = raw.get("exponent", raw.get("coefficient"))
        return cls(
            raw["parameter"],
            raw["covariate"],
            kind,
            _number(f"{where}.reference", raw.get("reference", 1.0)),
            _number(f"{where}.exponent", coefficient),
        )

    @classmethod
    def _range(cls, where: str, raw: Mapping[str, Any]) -> CovariateEffect:
        lower = _bound(f"{where}.lower", raw.get("lower"), -math.inf)
        upper = _bound(f"{where}.upper", raw.get("upper"), math.inf)
        if math.isinf(lower) and math.isinf(upper):
            raise InputError(f"{where}: a range effect needs lower, upper or both; e.g. lower: 0.6, upper: 1.0.")
        if lower >= upper:
            raise InputError(f"{where}: lower ({lower}) must be below upper ({upper}).")
        inside, outside = (_factor(f"{where}.{key}", raw.get(key, 1.0)) for key in ("inside", "outside"))
        parameter, covariate = raw["parameter"], raw["covariate"]
        return cls(parameter, covariate, "range", lower=lower, upper=upper, inside=inside, outside=outside)

    def factor(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "categorical":
            return np.array([self.factors.get(str(v), 1.0) for v in values])
        x = np.asarray(values, dtype=np.float64)
        if self.kind == "range":
            return np.where((x >= self.lower) & (x <= self.upper), self.inside, self.outside)
        if self.kind == "power":
            return (x / self.reference) ** self.exponent
        return np.exp(self.exponent * (x - self.reference))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"parameter": self.parameter, "covariate": self.covariate, "kind": self.kind}
        if self.kind == "categorical":
            out["factors"] = dict(self.factors)
        elif self.kind == "range":
            bounds = {"lower": self.lower, "upper": self.upper}
            out.update({k: v for k, v in bounds.items() if math.isfinite(v)})
            out.update({"inside": self.inside, "outside": self.outside})
        else:
            out.update({"reference": self.reference, "exponent": self.exponent})
        return out


@dataclass(frozen=True)
class Constraint:
    """A plausibility constraint: ``lower <= expression <= upper`` over parameters
    (a formula of parameter and covariate names, see :mod:`twinloop.cohort.expressions`).
    The formula is validated when the constraint is made."""

    expression: str
    lower: float = -math.inf
    upper: float = math.inf
    name: str = ""
    where: str = field(default="", repr=False, compare=False)  # how errors name it; default "constraint 'name'"
    formula: Formula = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = self.where or f"constraint '{self.name or self.expression}'"
        object.__setattr__(self, "formula", Formula(self.expression, where))

    @classmethod
    def parse(cls, i: int, raw: Any) -> Constraint:
        where = f"constraints[{i}]"
        raw = _mapping(where, raw)
        _known_keys(where, raw, {"expression", "lower", "upper", "name"})
        if not isinstance(raw.get("expression"), str):
            raise InputError(
                f"{where}.expression must be a formula such as 'log(2) / KL'; got {raw.get('expression')!r}."
            )
        return cls(
            raw["expression"],
            _bound(f"{where}.lower", raw.get("lower"), -math.inf),
            _bound(f"{where}.upper", raw.get("upper"), math.inf),
            str(raw.get("name", raw["expression"])),
            where=f"{where}.expression",
        )

    def evaluate(self, names: Mapping[str, Any]) -> np.ndarray:
        """The formula's value over arrays of parameters and covariates."""
        return self.formula.numbers(names)

    def to_dict(self) -> dict[str, Any]:
        return {"expression": self.expression, "lower": self.lower, "upper": self.upper, "name": self.name}


@dataclass(frozen=True)
class OutputConstraint:
    """A plausibility constraint on a simulated output under the model's standard
    scenario: ``lower <= statistic(observable) <= upper``."""

    observable: str
    statistic: str
    lower: float = -math.inf
    upper: float = math.inf

    @classmethod
    def parse(cls, i: int, raw: Any) -> OutputConstraint:
        where = f"output_constraints[{i}]"
        raw = _mapping(where, raw)
        _known_keys(where, raw, {"observable", "statistic", "lower", "upper"})
        if raw.get("statistic") not in STATISTICS:
            raise InputError(f"{where}.statistic is {raw.get('statistic')!r}; expected one of {', '.join(STATISTICS)}.")
        return cls(
            str(raw.get("observable")),
            raw["statistic"],
            _bound(f"{where}.lower", raw.get("lower"), -math.inf),
            _bound(f"{where}.upper", raw.get("upper"), math.inf),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"observable": self.observable, "statistic": self.statistic, "lower": self.lower, "upper": self.upper}


@dataclass(frozen=True)
class Omega:
    """The covariance of the random effects ``eta`` (log scale), over ``names``."""

    names: tuple[str, ...]
    matrix: np.ndarray

    @classmethod
    def parse(cls, where: str, raw: Any) -> Omega:
        raw = _mapping(where, raw)
        if "matrix" in raw:
            names = tuple(str(n) for n in raw.get("names", []))
            matrix = np.asarray(raw["matrix"], dtype=np.float64)
            if matrix.shape != (len(names), len(names)):
                raise InputError(
                    f"{where}.matrix must be {len(names)} x {len(names)} for names {list(names)}; "
                    f"got shape {matrix.shape}."
                )
        else:
            names = tuple(str(n) for n in raw)
            matrix = np.diag([_number(f"{where}.{n}", raw[n]) for n in names]) if names else np.zeros((0, 0))
        if not np.allclose(matrix, matrix.T):
            raise InputError(f"{where} must be symmetric.")
        if names and np.linalg.eigvalsh(matrix).min() < -1e-12:
            raise InputError(
                f"{where} must be positive semi-definite (a covariance matrix); it has a negative eigenvalue."
            )
        return cls(names, matrix)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "matrix": self.matrix.tolist()}


@dataclass(frozen=True)
class Group:
    """A stratum of the population with its own covariates and typical values."""

    name: str
    fraction: float
    covariates: tuple[Covariate, ...]
    typical: Mapping[str, float]
    omega: Omega | None = None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file into a mapping, with a clear error for a missing, oversized or
    bad file (that never echoes its content; see :mod:`twinloop._yaml`)."""
    from twinloop._yaml import load_yaml as load_bounded

    return load_bounded(path)


def finite_numbers(values: Any) -> np.ndarray:
    """The finite numeric values of ``values`` (others dropped)."""
    x = np.asarray([_as_float(v) for v in np.asarray(values, dtype=object).reshape(-1)], dtype=np.float64)
    return x[np.isfinite(x)]


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
