"""Populations of virtual patients and the cohorts sampled from them.

:class:`Population` is the NLME model of a disease population (see
:mod:`twinloop.cohort.spec` for the YAML form); :meth:`Population.sample` draws a
:class:`Cohort` by rejection sampling against the plausibility constraints and reports
its acceptance rate; :meth:`Population.condition` restricts it to a rare region (edge
cases) with the correct conditional distribution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twinloop.cohort.expressions import Formula
from twinloop.cohort.regions import check_condition, parse_regions
from twinloop.cohort.spec import (
    STATISTICS,
    Constraint,
    Covariate,
    CovariateEffect,
    Group,
    Omega,
    OutputConstraint,
    _known_keys,
    _mapping,
    _number,
    _positive,
    load_yaml,
)
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.registry import get as get_model
from twinloop.simulate import COHORT_SOLVER, simulate

LOW_ACCEPTANCE = 0.01


class LowAcceptanceWarning(UserWarning):
    """Rejection sampling accepted few candidates: the constraints cut deep into the population."""


@dataclass(frozen=True)
class Region:
    """A restriction of the population: ``lower <= name <= upper``, or ``name`` in ``levels``."""

    name: str
    lower: float = -math.inf
    upper: float = math.inf
    levels: tuple[str, ...] = ()

    def inside(self, values: np.ndarray) -> np.ndarray:
        if self.levels:
            return np.isin(values.astype(str), self.levels)
        v = np.asarray(values, dtype=np.float64)
        return (v >= self.lower) & (v <= self.upper)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lower": self.lower, "upper": self.upper, "levels": list(self.levels)}


@dataclass
class Cohort:
    """Concrete virtual patients: ids, covariates (and latent quantities), parameters.

    ``draws`` candidates were drawn and ``accepted`` of them were plausible (the
    cohort keeps the first ``len(ids)``); ``seed`` is the seed of the draw. ``table()``
    gives one row per patient (``patients.parquet``).
    """

    model_id: str
    ids: list[str]
    groups: np.ndarray
    covariates: pd.DataFrame
    parameters: np.ndarray
    parameter_names: tuple[str, ...]
    draws: int
    seed: Any
    accepted: int = 0

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.draws if self.draws else float("nan")

    def parameter(self, name: str) -> np.ndarray:
        return self.parameters[:, self.parameter_names.index(name)]

    def param_map(self) -> dict[str, np.ndarray]:
        return {name: self.parameters[:, i] for i, name in enumerate(self.parameter_names)}

    def table(self) -> pd.DataFrame:
        front = pd.DataFrame({"subject_id": self.ids, "group": self.groups.astype(str)})
        params = pd.DataFrame(self.parameters, columns=list(self.parameter_names))
        return pd.concat([front, self.covariates.reset_index(drop=True), params], axis=1)

    def __getitem__(self, rows: Any) -> Cohort:
        idx = np.arange(self.n)[rows]
        return dataclasses.replace(
            self,
            ids=[self.ids[i] for i in idx],
            groups=self.groups[idx],
            covariates=self.covariates.iloc[idx].reset_index(drop=True),
            parameters=self.parameters[idx],
        )

    @staticmethod
    def concat(parts: Sequence[Cohort]) -> Cohort:
        first = parts[0]
        return dataclasses.replace(
            first,
            ids=[i for c in parts for i in c.ids],
            groups=np.concatenate([c.groups for c in parts]),
            covariates=pd.concat([c.covariates for c in parts], ignore_index=True),
            parameters=np.concatenate([c.parameters for c in parts]),
            draws=sum(c.draws for c in parts),
            accepted=sum(c.accepted for c in parts),
        )


@dataclass(frozen=True)
class Population:
    """A population of virtual patients for one model (the NLME convention).

    Build it from YAML (:meth:`from_yaml`), a mapping (:meth:`from_dict`) or take the
    model's default (:meth:`default`).
    """

    model_id: str
    name: str
    groups: tuple[Group, ...]
    omega: Omega
    effects: tuple[CovariateEffect, ...] = ()
    fixed: Mapping[str, float] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    output_constraints: tuple[OutputConstraint, ...] = ()
    regions: tuple[Region, ...] = ()
    description: str = ""
    derived: Mapping[str, str] = field(default_factory=dict)

    # --- construction -----------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> Population:
        return cls.from_dict(load_yaml(path))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Population:
        """Validate a spec mapping; every error names the field and the fix."""
        raw = _mapping("population", raw)
        _known_keys(
            "population",
            raw,
            {
                "model",
                "name",
                "description",
                "covariates",
                "typical",
                "omega",
                "effects",
                "fixed",
                "constraints",
                "output_constraints",
                "groups",
                "regions",
                "extends",
                "derived",
            },
        )
        if "extends" in raw:
            raw = _extend(raw)
        if not isinstance(raw.get("model"), str):
            raise InputError(
                f"population.model must name a model (an id `twinloop models` shows); got {raw.get('model')!r}."
            )
        model = get_model(raw["model"])
        covariates = tuple(Covariate.parse(k, v) for k, v in _mapping("covariates", raw.get("covariates", {})).items())
        typical = {str(k): _positive(f"typical.{k}", v) for k, v in _mapping("typical", raw.get("typical", {})).items()}
        groups = tuple(
            _parse_group(k, v, covariates, typical) for k, v in _mapping("groups", raw.get("groups", {})).items()
        )
        if not groups:
            groups = (Group("all", 1.0, covariates, typical),)
        total = sum(g.fraction for g in groups)
        if not math.isclose(total, 1.0, rel_tol=1e-6):
            raise InputError(f"groups fractions must sum to 1; they sum to {total}.")
        pop = cls(
            model_id=model.id,
            name=_text("name", raw.get("name", model.id)),
            description=_text("description", raw.get("description", "")),
            groups=groups,
            omega=Omega.parse("omega", raw.get("omega", {})),
            effects=tuple(CovariateEffect.parse(i, e) for i, e in enumerate(_list("effects", raw.get("effects")))),
            fixed={str(k): _number(f"fixed.{k}", v) for k, v in _mapping("fixed", raw.get("fixed", {})).items()},
            constraints=tuple(
                Constraint.parse(i, c) for i, c in enumerate(_list("constraints", raw.get("constraints")))
            ),
            output_constraints=tuple(
                OutputConstraint.parse(i, c)
                for i, c in enumerate(_list("output_constraints", raw.get("output_constraints")))
            ),
            derived=_derived(raw.get("derived", {})),
            regions=tuple(Region(**r) for r in parse_regions(raw.get("regions"))),
        )
        pop.validate(model)
        return pop

    @classmethod
    def default(cls, model: Model | str) -> Population:
        """The model's default population: its profile's YAML, else one from its parameter
        bounds (see :mod:`twinloop.cohort.defaults`)."""
        from twinloop.cohort.defaults import default_population

        return default_population(model)

    def validate(self, model: Model) -> None:
        """Check every name refers to something that exists."""
        params = set(model.parameter_names)
        derived = set(model.derived_parameters)
        covariate_names = {c.name for g in self.groups for c in g.covariates}
        for name in self.omega.names:
            if not any(name in g.typical for g in self.groups):
                raise InputError(f"omega names '{name}' but no typical value is given for it; add typical.{name}.")
        for name in self.fixed:
            if name not in params:
                raise InputError(f"fixed.{name}: '{name}' is not a parameter of model '{model.id}'.")
        for name in (*self.fixed, *(n for g in self.groups for n in g.typical)):
            if name in derived:
                raise InputError(f"'{name}' of model '{model.id}' is derived from the other parameters; do not set it.")
        for e in self.effects:
            if not any(e.parameter in g.typical for g in self.groups):
                raise InputError(f"An effect on '{e.parameter}' needs typical.{e.parameter}.")
            if e.covariate not in covariate_names:
                raise InputError(f"An effect on '{e.parameter}' uses covariate '{e.covariate}', which is not declared.")
        for oc in self.output_constraints:
            if oc.observable not in model.observable_names:
                raise InputError(
                    f"output constraint on '{oc.observable}': model '{model.id}' observes "
                    f"{list(model.observable_names)}."
                )

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (written into product manifests)."""
        return {
            "model": self.model_id,
            "name": self.name,
            "description": self.description,
            "groups": {
                g.name: {
                    "fraction": g.fraction,
                    "covariates": {c.name: c.to_dict() for c in g.covariates},
                    "typical": dict(g.typical),
                    **({"omega": g.omega.to_dict()} if g.omega else {}),
                }
                for g in self.groups
            },
            "omega": self.omega.to_dict(),
            "effects": [e.to_dict() for e in self.effects],
            "fixed": dict(self.fixed),
            "constraints": [c.to_dict() for c in self.constraints],
            "output_constraints": [c.to_dict() for c in self.output_constraints],
            "regions": [r.to_dict() for r in self.regions],
            "derived": dict(self.derived),
        }

    def content_hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, default=_json_default)
        return hashlib.sha256(text.encode()).hexdigest()

    # --- sampling ---------------------------------------------------------
    def sample(self, n: int, seed: int = 0, *, max_draws: int | None = None, id_prefix: str = "vp") -> Cohort:
        """Draw ``n`` plausible patients (rejection sampling).

        Warns (:class:`LowAcceptanceWarning`) when fewer than 1 % of candidates are
        accepted and raises :class:`InputError` when ``max_draws`` (default
        ``200 * n + 10_000``) candidates give fewer than ``n``.
        """
        if n < 1:
            raise InputError(f"The number of patients must be >= 1; got {n}.")
        model = get_model(self.model_id)
        rng = np.random.default_rng(seed)
        limit = max_draws if max_draws is not None else 200 * n + 10_000
        parts: list[Cohort] = []
        accepted = draws = 0
        rate = 1.0
        while accepted < n:
            if draws >= limit:
                raise InputError(
                    f"Population '{self.name}': only {accepted} of {n} patients accepted after {draws} draws "
                    f"(acceptance {accepted / draws:.2%}); relax the constraints or the region."
                )
            batch = int(min(limit - draws, max(256, math.ceil((n - accepted) / max(rate, 1e-3) * 1.2))))
            part = self._draw(model, batch, rng)
            draws += batch
            parts.append(part)
            accepted += part.n
            rate = max(accepted / draws, 1.0 / draws)
        cohort = Cohort.concat(parts)[:n]
        width = max(5, len(str(n - 1)))
        cohort.ids = [f"{id_prefix}{i:0{width}d}" for i in range(n)]
        cohort.draws, cohort.seed = draws, seed
        if cohort.acceptance_rate < LOW_ACCEPTANCE:
            warnings.warn(
                f"Population '{self.name}': acceptance rate {cohort.acceptance_rate:.2%} ({n} of {draws} draws); "
                "the constraints or region are far in the tails.",
                LowAcceptanceWarning,
                stacklevel=2,
            )
        return cohort

    def _draw(self, model: Model, m: int, rng: np.random.Generator) -> Cohort:
        """Draw ``m`` candidates and keep the plausible ones."""
        fractions = np.array([g.fraction for g in self.groups])
        which = rng.choice(len(self.groups), size=m, p=fractions / fractions.sum())
        names = [n for g in self.groups for n in g.typical]
        latent = list(dict.fromkeys(n for n in names if n not in model.parameter_names))
        covariate_names = list(dict.fromkeys(c.name for g in self.groups for c in g.covariates))
        covs: dict[str, np.ndarray] = {c: np.full(m, np.nan, dtype=object) for c in covariate_names}
        values: dict[str, np.ndarray] = {n: np.full(m, np.nan) for n in dict.fromkeys(names)}
        for gi, group in enumerate(self.groups):
            rows = np.flatnonzero(which == gi)
            for cov in group.covariates:
                covs[cov.name][rows] = cov.sample(rows.size, rng)
            omega = group.omega or self.omega
            eta = _mvn(omega.matrix, rows.size, rng)
            for name, typical in group.typical.items():
                value = np.full(rows.size, typical)
                if name in omega.names:
                    value = value * np.exp(eta[:, omega.names.index(name)])
                values[name][rows] = value
        for effect in self.effects:
            values[effect.parameter] = values[effect.parameter] * effect.factor(covs[effect.covariate])
        cov_frame = pd.DataFrame({k: _tidy(v) for k, v in covs.items()}, index=pd.RangeIndex(m))
        full = {p.name: np.full(m, p.default) for p in model.parameters}
        full.update({k: np.full(m, v) for k, v in self.fixed.items()})
        full.update({k: v for k, v in values.items() if k in full})
        if model.derive is not None:
            full.update(model.derive({**full, **{k: values[k] for k in latent}}))
        params = np.stack([full[name] for name in model.parameter_names], axis=1)
        for name in latent:
            cov_frame[name] = values[name]
        if self.derived:
            scope: dict[str, Any] = {n: params[:, i] for i, n in enumerate(model.parameter_names)}
            scope.update({c: cov_frame[c].to_numpy() for c in cov_frame.columns})
            for name, expression in self.derived.items():
                cov_frame[name] = Formula(expression, f"derived.{name}").numbers(scope)
                scope[name] = cov_frame[name].to_numpy()
        group_names = np.array([g.name for g in self.groups], dtype=object)[which]
        keep = self._plausible(model, params, cov_frame, group_names)
        return Cohort(
            model.id,
            [""] * int(keep.sum()),
            group_names[keep],
            cov_frame[keep].reset_index(drop=True),
            params[keep],
            model.parameter_names,
            m,
            None,
            int(keep.sum()),
        )

    def _plausible(self, model: Model, params: np.ndarray, covs: pd.DataFrame, groups: np.ndarray) -> np.ndarray:
        lower = np.array([p.lower for p in model.parameters])
        upper = np.array([p.upper for p in model.parameters])
        keep = np.all(np.isfinite(params) & (params >= lower) & (params <= upper), axis=1)
        scope: dict[str, Any] = {n: params[:, i] for i, n in enumerate(model.parameter_names)}
        scope.update({c: covs[c].to_numpy() for c in covs.columns})
        scope["group"] = groups
        for c in self.constraints:
            v = c.evaluate(scope)
            keep &= np.isfinite(v) & (v >= c.lower) & (v <= c.upper)
        for region in self.regions:
            if region.name not in scope:
                raise InputError(f"Region on '{region.name}': not a parameter, covariate or 'group'.")
            keep &= region.inside(np.asarray(scope[region.name]))
        if self.output_constraints and keep.any():
            rows = np.flatnonzero(keep)
            keep[rows] = _outputs_plausible(model, params[rows], self.output_constraints)
        return keep

    def sample_chunks(self, n: int, seed: int, chunk_size: int) -> Iterator[Cohort]:
        """The cohort of ``n`` patients in independent chunks (chunk ``k`` seeded by
        ``(seed, k)``), so any chunk can be regenerated alone, e.g. on ``--resume``."""
        width = max(5, len(str(n - 1)))
        for k in range(math.ceil(n / chunk_size)):
            yield self.sample_chunk(n, seed, chunk_size, k, width)

    def sample_chunk(self, n: int, seed: int, chunk_size: int, k: int, width: int | None = None) -> Cohort:
        lo, hi = k * chunk_size, min(n, (k + 1) * chunk_size)
        width = width or max(5, len(str(n - 1)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LowAcceptanceWarning)
            part = self.sample(hi - lo, seed=np.random.SeedSequence([seed, k]).generate_state(1)[0])
        part.ids = [f"vp{i:0{width}d}" for i in range(lo, hi)]
        part.seed = [seed, k]
        return part

    # --- edge cases ---------------------------------------------------------
    def condition(self, reference_n: int = 100_000, reference_seed: int = 12345, **region: Any) -> Population:
        """The population restricted to a region, e.g. ``condition(Vmx={"quantile": [0, 0.05]})``
        or ``condition(group=["child"], carb_ratio={"quantile": [0.8, 1]})``.

        Quantiles refer to the unconditioned population (estimated from
        ``reference_n`` draws). Sampling the result draws from the population and keeps
        the patients inside the region: exactly the conditional distribution, with
        the acceptance rate reported.
        """
        check_condition(self, get_model(self.model_id), region)
        reference: Cohort | None = None
        regions = list(self.regions)
        for name, spec in region.items():
            if isinstance(spec, list | tuple) and all(isinstance(s, str) for s in spec):
                regions.append(Region(name, levels=tuple(spec)))
                continue
            spec = _mapping(f"region.{name}", spec)
            if "quantile" in spec:
                lo_q, hi_q = (float(q) for q in spec["quantile"])
                if not 0.0 <= lo_q < hi_q <= 1.0:
                    raise InputError(
                        f"region.{name}.quantile must be [low, high] within [0, 1]; got {spec['quantile']}."
                    )
                if reference is None:
                    reference = self.sample(reference_n, seed=reference_seed)
                values = _column(reference, name)
                lower = -math.inf if lo_q == 0.0 else float(np.quantile(values, lo_q))
                upper = math.inf if hi_q == 1.0 else float(np.quantile(values, hi_q))
                regions.append(Region(name, lower, upper))
            else:
                regions.append(Region(name, float(spec.get("lower", -math.inf)), float(spec.get("upper", math.inf))))
        return dataclasses.replace(self, regions=tuple(regions), name=f"{self.name} | {_region_text(regions)}")


def _list(where: str, raw: Any) -> list[Any]:
    """An optional list in a population spec (absent or null: empty)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InputError(f"population.{where} must be a list of mappings; got {type(raw).__name__} {raw!r}.")
    return raw


def _text(where: str, raw: Any) -> str:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise InputError(f"population.{where} must be text; got {type(raw).__name__} {raw!r}.")
    return str(raw)


def _derived(raw: Any) -> dict[str, str]:
    """``derived: {name: formula}``, each formula validated (see :mod:`twinloop.cohort.expressions`)."""
    out = {str(k): str(v) for k, v in _mapping("derived", raw).items()}
    for name, text in out.items():
        Formula(text, f"derived.{name}")
    return out


def _extend(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``extends: default``: the model's default population with these keys replacing
    its own, except constraints and output constraints, which are added."""
    if raw["extends"] != "default" or not isinstance(raw.get("model"), str):
        raise InputError(f"extends must be 'default' (with model: ...); got {raw['extends']!r}.")
    base = Population.default(raw["model"]).to_dict()
    merged = {**base, **{k: v for k, v in raw.items() if k != "extends"}}
    for key in ("constraints", "output_constraints"):
        merged[key] = list(base.get(key, [])) + _list(key, raw.get(key))
    return merged


def _column(cohort: Cohort, name: str) -> np.ndarray:
    if name in cohort.parameter_names:
        return cohort.parameter(name)
    if name in cohort.covariates.columns:
        return cohort.covariates[name].to_numpy(dtype=np.float64)
    raise InputError(f"Region on '{name}': not a parameter or numeric covariate of this population.")


def _region_text(regions: Sequence[Region]) -> str:
    parts = []
    for r in regions:
        parts.append(f"{r.name} in {list(r.levels)}" if r.levels else f"{r.lower:.4g} <= {r.name} <= {r.upper:.4g}")
    return ", ".join(parts)


def _parse_group(name: str, raw: Any, covariates: tuple[Covariate, ...], typical: dict[str, float]) -> Group:
    where = f"groups.{name}"
    raw = _mapping(where, raw)
    _known_keys(where, raw, {"fraction", "covariates", "typical", "omega"})
    own = {c.name: c for c in covariates}
    own.update(
        {k: Covariate.parse(k, v) for k, v in _mapping(f"{where}.covariates", raw.get("covariates", {})).items()}
    )
    values = dict(typical)
    values.update(
        {
            str(k): _positive(f"{where}.typical.{k}", v)
            for k, v in _mapping(f"{where}.typical", raw.get("typical", {})).items()
        }
    )
    omega = Omega.parse(f"{where}.omega", raw["omega"]) if "omega" in raw else None
    return Group(name, _positive(f"{where}.fraction", raw.get("fraction")), tuple(own.values()), values, omega)


def _mvn(cov: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if cov.size == 0:
        return np.zeros((n, 0))
    # eigen-decomposition: stable for semi-definite covariances
    w, v = np.linalg.eigh(cov)
    return rng.standard_normal((n, cov.shape[0])) @ (v * np.sqrt(np.clip(w, 0.0, None))).T


def _tidy(values: np.ndarray) -> Any:
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError):
        return values.astype(str)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def statistic(values: np.ndarray, name: str) -> np.ndarray:
    """One summary of each row of a ``(n, T)`` array."""
    if name not in STATISTICS:
        raise InputError(f"Unknown statistic {name!r}; expected one of {', '.join(STATISTICS)}.")
    if name == "min":
        return values.min(axis=1)
    if name == "max":
        return values.max(axis=1)
    if name == "mean":
        return values.mean(axis=1)
    return values[:, -1] if name == "final" else values[:, 0]


def _outputs_plausible(model: Model, params: np.ndarray, constraints: Sequence[OutputConstraint]) -> np.ndarray:
    plan, t_end = model.standard_scenario(model.param_map(params.T))
    times = np.linspace(0.0, t_end, 289)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = simulate(model, params, plan, times=times, progress=False, chunk_size=min(len(params), 2000),
                        settings=COHORT_SOLVER)  # fmt: skip
    keep = np.ones(len(params), dtype=bool)
    failed = np.isin(traj.patient_ids, list(traj.failures))
    keep &= ~failed
    for c in constraints:
        v = statistic(traj[c.observable], c.statistic)
        keep &= (v >= c.lower) & (v <= c.upper)
    return keep
