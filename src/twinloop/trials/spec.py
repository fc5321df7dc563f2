"""The trial specification: who is screened and enrolled, which arms, how participants are
randomized, what is measured, which endpoints and how they are analysed.

The keys a trial shares with a data product (``model``, ``population``, ``condition``,
``duration``, ``resolution``, ``arms``, ``observations``, ``control``, ``solver``,
``chunk_size``, ``batch_size``, ``seed``, ``origin``) are validated by
:class:`~twinloop.products.spec.ProductSpec` (kept as ``spec.product``); the trial's own keys
are validated here, and each section by its module (``randomization``, ``baseline``,
``endpoints``, ``analysis``, ``prognostic``, ``external_control``, ``subgroups``) against a
:class:`~twinloop.trials.context.SpecContext`. ``examples/trial_*.yaml`` show whole specs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinloop._paths import spec_path
from twinloop.cohort.expressions import Formula
from twinloop.cohort.population import Population
from twinloop.errors import InputError
from twinloop.models.registry import get as get_model
from twinloop.products import limits
from twinloop.products.spec import ProductSpec
from twinloop.trials.analysis import AnalysisPlan
from twinloop.trials.context import SpecContext
from twinloop.trials.external import ExternalControlSpec
from twinloop.trials.procova import PrognosticSpec
from twinloop.trials.randomize import Randomization
from twinloop.trials.subgroups import SubgroupSpec

SHARED = ("model", "population", "condition", "duration", "resolution", "arms", "observations", "control", "solver",
          "chunk_size", "batch_size", "seed", "origin")  # fmt: skip
OWN = ("name", "eligibility", "n", "replicates", "max_screened", "control_arm", "run_in", "randomization", "baseline",
       "endpoints", "analysis", "prognostic", "external_control", "subgroups")  # fmt: skip
RESERVED = ("replicate", "order", "subject_id", "arm", "stratum", "group", "simulation_failed")
MAX_REPLICATES = 100_000
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")  # measures and endpoints: usable in formulas


@dataclass(frozen=True)
class RunIn:
    """Before randomization every candidate runs arm ``arm``'s treatment for ``duration``."""

    arm: str
    duration: float

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "duration": self.duration}


@dataclass(frozen=True)
class TrialSpec:
    """A validated trial specification (see the module docstring).

    Example:
        >>> spec = TrialSpec.from_yaml("examples/trial_nsclc.yaml")  # doctest: +SKIP
        >>> spec.with_(n=100, replicates=20).n
        100
    """

    raw: Mapping[str, Any]
    name: str
    product: ProductSpec
    n: int
    replicates: int
    seed: int
    max_screened: int | None
    control_arm: str
    eligibility: tuple[Formula, ...]
    run_in: RunIn | None
    randomization: Randomization
    baseline: Mapping[str, Any]
    endpoints: Mapping[str, Any]
    analysis: AnalysisPlan
    prognostic: PrognosticSpec
    external_control: ExternalControlSpec
    subgroups: SubgroupSpec
    context: SpecContext

    # --- shortcuts to the shared keys -------------------------------------------
    @property
    def model_id(self) -> str:
        return self.product.model_id

    @property
    def population(self) -> Population:
        return self.product.population

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(self.product.arms)

    @property
    def duration(self) -> float:
        return self.product.duration

    @property
    def chunk_size(self) -> int:
        return self.product.chunk_size

    @property
    def base_dir(self) -> Path | None:
        return self.context.base_dir

    # --- construction -------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> TrialSpec:
        """Read a trial spec; relative paths in it are resolved against its folder."""
        from twinloop.cohort.spec import load_yaml

        file = Path(path)
        return cls.from_dict(load_yaml(file), base_dir=file.parent)

    @classmethod
    def from_dict(cls, raw: Any, base_dir: str | Path | None = None) -> TrialSpec:
        """Validate a whole trial spec (every key, every section) before anything runs.

        Raises:
            InputError: naming the key path, the value, what was expected and the fix.
        """
        if not isinstance(raw, Mapping):
            raise InputError(f"A trial spec must be a mapping (key: value); got {type(raw).__name__}.")
        unknown = sorted(str(k) for k in set(raw) - set(SHARED) - set(OWN))
        if unknown:
            raise InputError(f"trial spec has unknown keys {unknown}; accepted: {sorted((*SHARED, *OWN))}.")
        if "arms" not in raw:
            raise InputError("trial spec needs 'arms', e.g. {A: {kind: none}, B: {kind: chemotherapy, ...}}.")
        folder = Path(base_dir) if base_dir is not None else None
        n = limits.whole_number("n", raw.get("n"), 4, limits.MAX_PATIENTS)
        replicates = limits.whole_number("replicates", raw.get("replicates", 1), 1, MAX_REPLICATES)
        product = _product(raw, n * replicates, folder)
        name = _name("name", raw.get("name", product.model_id))
        arms = [_name(f"arms.{a}", a) for a in product.arms]
        control_arm = raw.get("control_arm", arms[0])
        if control_arm not in arms:
            raise InputError(f"control_arm is {control_arm!r}; it must be one of the arms {arms}.")
        max_screened = raw.get("max_screened")
        if max_screened is not None:
            max_screened = limits.whole_number("max_screened", max_screened, n * replicates, 10 * limits.MAX_PATIENTS)
        run_in = _run_in(raw.get("run_in"), arms, product)
        covariates = covariate_names(product.population)
        protocols = {p.name: p.observable for p in product.observations}
        ctx = SpecContext(product.model_id, tuple(arms), str(control_arm), covariates, (), {}, protocols, folder)
        baseline = _baseline(raw.get("baseline"), ctx, run_in)
        ctx = dataclasses.replace(ctx, baselines=tuple(baseline))
        eligibility = _eligibility(raw.get("eligibility"), ctx)
        endpoints = _endpoints(raw.get("endpoints"), ctx, product.duration)
        ctx = dataclasses.replace(ctx, endpoints={k: e.kind_of for k, e in endpoints.items()})
        return cls(
            raw=dict(raw),
            name=name,
            product=product,
            n=n,
            replicates=replicates,
            seed=product.seed,
            max_screened=max_screened,
            control_arm=str(control_arm),
            eligibility=eligibility,
            run_in=run_in,
            randomization=Randomization.parse("randomization", raw.get("randomization"), ctx),
            baseline=baseline,
            endpoints=endpoints,
            analysis=AnalysisPlan.parse("analysis", raw.get("analysis"), ctx),
            prognostic=PrognosticSpec.parse("prognostic", raw.get("prognostic"), ctx),
            external_control=ExternalControlSpec.parse("external_control", raw.get("external_control"), ctx),
            subgroups=SubgroupSpec.parse("subgroups", raw.get("subgroups"), ctx),
            context=ctx,
        )

    def with_(self, *, n: int | None = None, replicates: int | None = None, seed: int | None = None) -> TrialSpec:
        """The same trial with another sample size, replicate count or seed (validated)."""
        n = self.n if n is None else limits.whole_number("n", n, 4, limits.MAX_PATIENTS)
        replicates = self.replicates if replicates is None else replicates
        replicates = limits.whole_number("replicates", replicates, 1, MAX_REPLICATES)
        seed = self.seed if seed is None else limits.whole_number("seed", seed, 0, 2**63 - 1)
        limits.check_patients(n * replicates, 1, 1)
        screened = self.max_screened
        if screened is not None and screened < n * replicates:
            raise InputError(
                f"max_screened ({screened}) is below n x replicates ({n} x {replicates}); raise max_screened."
            )
        raw = {**self.raw, "n": n, "replicates": replicates, "seed": seed}
        requested = self.raw.get("chunk_size")
        model = get_model(self.model_id)
        points = limits.output_points(self.duration, self.product.resolution)
        chunk = limits.chunk_size_for(requested, n * replicates, points, len(model.observables))
        product = dataclasses.replace(self.product, seed=seed, raw={**self.product.raw, "seed": seed}, chunk_size=chunk)
        return dataclasses.replace(self, raw=raw, n=n, replicates=replicates, seed=seed, product=product)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain data (population expanded); ``from_dict`` accepts it back."""
        shared = self.product.to_dict()
        shared.pop("population_hash", None)
        shared.pop("name", None)
        shared.pop("n", None)
        shared.pop("outcomes", None)
        own = {
            "name": self.name,
            "n": self.n,
            "replicates": self.replicates,
            "max_screened": self.max_screened,
            "control_arm": self.control_arm,
            "eligibility": [f.text for f in self.eligibility],
            "run_in": None if self.run_in is None else self.run_in.to_dict(),
            "randomization": self.randomization.to_dict(),
            "baseline": {k: m.to_dict() for k, m in self.baseline.items()},
            "endpoints": {k: e.to_dict() for k, e in self.endpoints.items()},
            "analysis": self.analysis.to_dict(),
            "prognostic": self.prognostic.to_dict(),
            "external_control": self.external_control.to_dict(),
            "subgroups": self.subgroups.to_dict(),
        }
        out: dict[str, Any] = json.loads(json.dumps({**shared, **own}, default=str))
        return out

    def content_hash(self) -> str:
        """SHA-256 of the resolved spec (what a result's lineage records)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def covariate_names(population: Population) -> tuple[str, ...]:
    """The covariate columns a cohort of ``population`` carries (``group`` first): covariates,
    latent quantities and derived quantities, as ``Population.sample`` builds them."""
    model = get_model(population.model_id)
    names = [c.name for g in population.groups for c in g.covariates]
    names += [n for g in population.groups for n in g.typical if n not in model.parameter_names]
    names += list(population.derived)
    return tuple(dict.fromkeys(["group", *names]))


def _name(where: str, value: Any, pattern: re.Pattern[str] = _NAME) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        rule = "1 to 64 letters, digits, '_' or '-'" if pattern is _NAME else "1 to 64 letters, digits or '_'"
        raise InputError(
            f"{where}: the name {value!r} becomes a column and file name, so it must be {rule}, starting with a "
            "letter; rename it."
        )
    return value


def _product(raw: Mapping[str, Any], total: int, folder: Path | None) -> ProductSpec:
    """The shared keys validated by the product spec (outcomes none, ``n`` the total participants)."""
    shared = {k: raw[k] for k in SHARED if k in raw}
    population = shared.get("population")
    if isinstance(population, str) and population != "default":
        from twinloop.cohort.spec import load_yaml

        shared["population"] = load_yaml(spec_path(folder or Path.cwd(), population, "population"))
    return ProductSpec.from_dict({**shared, "name": "trial", "n": total, "outcomes": {"kind": "none"}})


def _run_in(raw: Any, arms: list[str], product: ProductSpec) -> RunIn | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) != {"arm", "duration"}:
        raise InputError(f"run_in must be a mapping {{arm: NAME, duration: T}}; got {raw!r}.")
    if raw["arm"] not in arms:
        raise InputError(f"run_in.arm is {raw['arm']!r}; it must be one of the arms {arms}.")
    duration = limits.finite_number("run_in.duration", raw["duration"], positive=True)
    if duration < product.resolution:
        raise InputError(f"run_in.duration ({duration:g}) must be at least the resolution ({product.resolution:g}).")
    if product.control and not float(duration).is_integer():
        raise InputError(f"run_in.duration must be whole model time units for closed-loop arms; got {duration:g}.")
    return RunIn(str(raw["arm"]), duration)


def _section(where: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be a mapping of names to definitions; got {raw!r}.")
    return raw


def _check_new(where: str, name: Any, taken: set[str], pattern: re.Pattern[str] = _IDENTIFIER) -> str:
    name = _name(where, name, pattern)
    if name in taken or name in RESERVED or keyword.iskeyword(name):
        raise InputError(
            f"{where}: the name {name!r} is already a participant column (covariates, reserved {list(RESERVED)} "
            "or another measure or endpoint); choose another name."
        )
    return name


def _baseline(raw: Any, ctx: SpecContext, run_in: RunIn | None) -> dict[str, Any]:
    from twinloop.trials.endpoints import parse_measures

    taken = set(ctx.covariates)
    for key in _section("baseline", raw):
        taken.add(_check_new(f"baseline.{key}", key, taken))
    measures = parse_measures("baseline", raw, ctx)
    for name, measure in measures.items():
        window = measure.window
        if run_in is None and window is not None and float(window[1]) > 0:
            raise InputError(
                f"baseline.{name}.window is {list(window)}; without a run_in a baseline measure is taken before "
                "randomization, at time 0: use window [0, 0], or add run_in: {arm: ..., duration: ...}."
            )
        if run_in is not None and window is not None and float(window[1]) > run_in.duration:
            raise InputError(
                f"baseline.{name}.window is {list(window)}; it must lie within the run-in [0, {run_in.duration:g}]."
            )
    return measures


def _eligibility(raw: Any, ctx: SpecContext) -> tuple[Formula, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InputError(f"eligibility must be a list of formulas such as 'age >= 18'; got {raw!r}.")
    formulas = []
    for i, text in enumerate(raw):
        where = f"eligibility[{i}]"
        if not isinstance(text, str):
            raise InputError(f"{where} must be a formula (text) such as 'age >= 18'; got {text!r}.")
        formula = Formula(text, where)
        unknown = sorted(formula.names - set(ctx.columns))
        if unknown:
            raise InputError(
                f"{where} is {text!r}: it uses unknown names {unknown}; it may use the covariates and baseline "
                f"measures {list(ctx.columns)}."
            )
        formulas.append(formula)
    return tuple(formulas)


def _endpoints(raw: Any, ctx: SpecContext, duration: float) -> dict[str, Any]:
    from twinloop.trials.endpoints import parse_endpoints

    taken = set(ctx.columns)
    for key in _section("endpoints", raw):
        name = _check_new(f"endpoints.{key}", key, taken)
        taken |= {name, f"{name}_event"}
    return parse_endpoints("endpoints", raw, ctx, duration=duration)
