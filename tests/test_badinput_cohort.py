"""The bad-input corpus of ``cohort generate/describe/fhir/from-real``, ``lineage``,
``simulate`` and ``models``: each case is refused with one error line naming the field,
exit 2, and nothing written (see :mod:`tests.badinput`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from badinput import Case, check_refused
from twinloop.products.dataset import generate
from twinloop.products.spec import ProductSpec

SMALL: dict[str, Any] = {
    "name": "small",
    "model": "tgi-claret",
    "population": "default",
    "n": 4,
    "seed": 1,
    "duration": 42,
    "resolution": 7,
    "chunk_size": 2,
    "arms": {"a": {"kind": "chemotherapy", "dose_mg": 1200, "cycle_days": 21, "n_cycles": 2}},
    "observations": [{"name": "ct", "observable": "sum_of_diameters", "schedule": {"every": 14},
                      "error": {"kind": "combined", "sd": 1.0, "cv": 0.05}}],
    "outcomes": {"kind": "recist", "observation": "ct"},
}  # fmt: skip
OBS = SMALL["observations"][0]
GENERATE = ["cohort", "generate", "{tmp}/spec.yaml", "--out", "{tmp}/out"]


def spec(case_id: str, names: list[str], extra: list[str] | None = None, **changes: Any) -> Case:
    """A ``cohort generate`` case: SMALL with ``changes`` (None deletes a key)."""
    raw = {k: v for k, v in {**SMALL, **changes}.items() if v is not None}
    return Case(case_id, [*GENERATE, *(extra or [])], names, files={"spec.yaml": yaml.safe_dump(raw)})


def observe(case_id: str, names: list[str], **changes: Any) -> Case:
    return spec(case_id, names, observations=[{**OBS, **changes}])


def arm(case_id: str, names: list[str], treatment: Any) -> Case:
    return spec(case_id, names, arms={"a": treatment})


CHEMO = SMALL["arms"]["a"]
GENERATE_CASES = [
    spec("n-inf", ["'n'", "inf"], n=float("inf")),
    spec("n-1e12", ["'n'", "1000000000000", "10000000", "TiB"], n=10**12),
    spec("n-nan", ["'n'", "nan"], n=float("nan")),
    spec("n-text", ["'n'", "many"], n="many"),
    spec("n-zero", ["'n'", ">= 1"], n=0),
    spec("n-fraction", ["'n'", "2.5"], n=2.5),
    spec("n-missing", ["'n'", "None"], n=None),
    spec("duration-1e13", ["'duration'", "1e+13", "36525", "100 years"], duration=1e13),
    spec("duration-nan", ["'duration'", "nan"], duration=float("nan")),
    spec("duration-inf", ["'duration'", "inf"], duration=float("inf")),
    spec("duration-negative", ["'duration'", "> 0"], duration=-5),
    spec("duration-text", ["'duration'", "a year"], duration="a year"),
    spec("resolution-tiny", ["'resolution'", "output points", "1000000", "MiB"], resolution=1e-6),
    spec("resolution-above-duration", ["resolution", "duration"], resolution=100),
    spec(
        "chunk-size-memory", ["'chunk_size'", "GiB", "Lower"], n=10**6, chunk_size=10**6, duration=36500, resolution=1
    ),
    spec("chunk-size-zero", ["'chunk_size'", "0"], chunk_size=0),
    spec("batch-size-zero", ["'batch_size'", "0"], batch_size=0),
    spec("seed-negative", ["'seed'", "-1"], seed=-1),
    spec("origin-number", ["origin", "12345", "a number is not read as a time"], origin=12345),
    spec("origin-text", ["origin", "yesterday", "ISO 8601"], origin="yesterday"),
    spec("origin-far-future", ["origin", "2300", "2200"], origin="2300-01-01T00:00:00Z"),
    spec("unknown-top-key", ["unknown keys", "durration", "accepted"], durration=5),
    spec(
        "unknown-outcomes-key",
        ["outcomes", "threshold", "min_sd_days"],
        outcomes={"kind": "recist", "observation": "ct", "threshold": 3},
    ),
    spec("outcomes-kind", ["outcomes.kind", "survival"], outcomes={"kind": "survival"}),
    spec(
        "outcomes-observation",
        ["outcomes.observation", "scan", "['ct']"],
        outcomes={"kind": "recist", "observation": "scan"},
    ),
    spec(
        "outcomes-min-sd",
        ["outcomes.min_sd_days", "six weeks"],
        outcomes={"kind": "recist", "observation": "ct", "min_sd_days": "six weeks"},
    ),
    spec("observations-not-list", ["observations", "must be a list"], observations={"ct": OBS}),
    spec("observations-duplicate", ["observations[1].name", "'ct'", "twice"], observations=[OBS, OBS]),
    observe("observation-unknown-key", ["observations[0]", "frequency", "accepted"], frequency=3),
    observe("observation-observable", ["sum_of_diameters", "tumour"], observable="tumour"),
    observe("observation-name-empty", ["observations[0].name", "''"], name=""),
    observe("schedule-unknown-key", ["observations[0].schedule", "evry", "accepted"], schedule={"every": 7, "evry": 3}),
    observe("schedule-every-zero", ["observations[0].schedule.every", "> 0"], schedule={"every": 0}),
    observe("schedule-every-tiny", ["observations[0].schedule", "events", "100000"], schedule={"every": 1e-6}),
    observe("schedule-every-bool", ["observations[0].schedule.every", "True"], schedule={"every": True}),
    observe("schedule-visits-text", ["observations[0].schedule.visits", "abc"], schedule={"visits": "abc"}),
    observe(
        "schedule-visits-nan", ["observations[0].schedule.visits[1]", "nan"], schedule={"visits": [0, float("nan")]}
    ),
    observe(
        "schedule-end-before-start", ["schedule.end", "schedule.start"], schedule={"every": 7, "start": 14, "end": 7}
    ),
    observe("error-kind", ["observations[0].error.kind", "gaussian"], error={"kind": "gaussian"}),
    observe("error-unknown-key", ["observations[0].error", "sdd", "accepted"], error={"kind": "additive", "sdd": 1}),
    observe(
        "error-sensor", ["observations[0].error.sensor", "Nope", "GuardianRT"], error={"kind": "cgm", "sensor": "Nope"}
    ),
    observe("error-upper-text", ["observations[0].error.upper", "high"], error={"kind": "additive", "upper": "high"}),
    observe(
        "error-upper-below-lower", ["error.upper", "error.lower"], error={"kind": "additive", "lower": 5, "upper": 1}
    ),
    observe("missing-mcar-one", ["observations[0].missing.mcar", "below 1"], missing={"mcar": 1.5}),
    observe("missing-text", ["observations[0].missing", "lots"], missing="lots"),
    observe("missing-mar-unknown-key", ["observations[0].missing.mar", "slop"], missing={"mar": {"slop": 1}}),
    observe("missing-mar-text", ["observations[0].missing.mar.intercept", "x"], missing={"mar": {"intercept": "x"}}),
    observe("dropout-text", ["observations[0].dropout", "soon"], dropout="soon"),
    observe("dropout-negative", ["observations[0].dropout.hazard", "-1"], dropout={"hazard": -1}),
    spec("arms-empty", ["arms", "{}"], arms={}),
    spec("arms-list", ["arms", "must map"], arms=[CHEMO]),
    spec("arms-and-treatment", ["treatment", "arms"], treatment=CHEMO),
    arm("arm-unknown-key", ["arms.a[0]", "dos", "dose_mg"], {**CHEMO, "dos": 3}),
    arm("arm-dose-text", ["arms.a[0].dose_mg", "lots"], {**CHEMO, "dose_mg": "lots"}),
    arm("arm-dose-missing", ["arms.a[0]", "dose_mg"], {"kind": "chemotherapy"}),
    arm("arm-dose-negative", ["arms.a[0].dose_mg", "-5"], {**CHEMO, "dose_mg": -5}),
    arm("arm-cycles-1e9", ["arms.a[0].n_cycles", "100000"], {**CHEMO, "n_cycles": 1e9}),
    arm("arm-cycles-fraction", ["arms.a[0].n_cycles", "2.5"], {**CHEMO, "n_cycles": 2.5}),
    arm("arm-route", ["arms.a[0].route", "rectal"], {**CHEMO, "route": "rectal"}),
    arm("arm-kind", ["arms.a[0].kind", "surgery"], {"kind": "surgery"}),
    arm(
        "arm-radiotherapy-fractions",
        ["arms.a[0].fractions", "-3"],
        {"kind": "radiotherapy", "fractions": -3, "dose_gy": 2},
    ),
    arm("arm-basal-bolus-on-tgi", ["arms.a[0]", "basal_bolus", "chemotherapy"], {"kind": "basal_bolus"}),
    spec("condition-unknown-name", ["condition.height", "accepted names"], condition={"height": {"lower": 1}}),
    spec("condition-unknown-level", ["condition.group", "martian"], condition={"group": ["martian"]}),
    spec("condition-quantile-order", ["condition.KL.quantile", "0.5"], condition={"KL": {"quantile": [0.5, 0.1]}}),
    spec("condition-empty-range", ["condition.KL", "lower", "upper"], condition={"KL": {"lower": 5, "upper": 1}}),
    spec("condition-unknown-key", ["condition.KL", "lowr"], condition={"KL": {"lowr": 1}}),
    spec("condition-not-mapping", ["condition", "must map"], condition=["group"]),
    spec("solver-text", ["solver", "fast"], solver="fast"),
    spec("solver-rtol-inf", ["solver.rtol", "inf"], solver={"rtol": float("inf")}),
    spec("solver-unknown", ["solver", "euler", "tsit5"], solver={"solver": "euler"}),
    spec("name-path", ["name", "../x"], name="../x"),
    spec("name-number", ["name", "5"], name=5),
    spec("model-unknown", ["model", "nope"], model="nope"),
    spec("model-missing", ["model"], model=None),
    spec("population-list", ["population", "[1, 2]"], population=[1, 2]),
    spec("population-outside", ["population", "leads outside"], population="../../../etc/passwd"),
    spec("population-missing-file", ["population.yaml", "does not exist"], population="population.yaml"),
    spec(
        "population-bad-covariate",
        ["covariates.age.distribution", "gamma"],
        population={"covariates": {"age": {"distribution": "gamma"}}},
    ),
    spec("population-constraints-not-list", ["population.constraints", "list"], population={"constraints": 5}),
    spec("population-unknown-key", ["population", "covariate", "allowed"], population={"covariate": {}}),
    spec(
        "population-regions-bad",
        ["regions[0]", "lower"],
        population={"extends": "default", "model": "tgi-claret", "regions": [{"name": "KL", "lower": "x"}]},
    ),
    spec(
        "population-impossible",
        ["only 0 of 2 patients accepted", "relax the constraints"],
        population={
            "extends": "default",
            "model": "tgi-claret",
            "constraints": [{"expression": "KL", "lower": 10, "upper": 11}],
        },
    ),
    Case("spec-not-mapping", GENERATE, ["spec.yaml", "mapping"], files={"spec.yaml": "- 1\n- 2\n"}),
    Case("spec-bad-yaml", GENERATE, ["spec.yaml", "not valid YAML", "line"], files={"spec.yaml": "name: [x\nn: 3\n"}),
    Case("spec-missing", GENERATE, ["spec.yaml", "does not exist"]),
    spec("max-chunks-negative", ["--max-chunks", "-1"], extra=["--max-chunks", "-1"]),
    spec("max-chunks-zero", ["--max-chunks", "0"], extra=["--max-chunks", "0"]),
    spec("n-option-zero", ["--n", "0"], extra=["--n", "0"]),
    spec("n-option-huge", ["'n'", "1000000000000", "10000000"], extra=["--n", str(10**12)]),
    spec("seed-option-negative", ["--seed", "-3"], extra=["--seed", "-3"]),
    Case("out-is-a-file", GENERATE, ["--out", "is a file"], files={"spec.yaml": yaml.safe_dump(SMALL), "out": "x"}),
    Case(
        "out-under-a-file",
        [*GENERATE[:4], "{tmp}/f/out"],
        ["--out", "lies under the file"],
        files={"spec.yaml": yaml.safe_dump(SMALL), "f": "x"},
    ),
]


@pytest.mark.parametrize("case", GENERATE_CASES, ids=str)
def test_generate_refuses_bad_specs(case: Case, tmp_path: Path) -> None:
    check_refused(case, tmp_path)
    assert (tmp_path / "out").exists() == ("out" in case.files)


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("product") / "p"
    generate(ProductSpec.from_dict(SMALL), out, progress=False)
    return out


def truncate(name: str) -> Callable[[Path], None]:
    return lambda p: (p / name).write_bytes((p / name).read_bytes()[:40])


def remove(name: str) -> Callable[[Path], None]:
    return lambda p: (p / name).unlink()


def replace(name: str, content: str) -> Callable[[Path], None]:
    return lambda p: (p / name).write_text(content)


P = "{tmp}/p"
DAMAGED: list[tuple[Case, Callable[[Path], None] | None]] = [
    (Case("describe-truncated-manifest", ["cohort", "describe", P], ["manifest.json", "damaged"]),
     truncate("manifest.json")),
    (Case("describe-manifest-list", ["cohort", "describe", P], ["manifest.json", "no JSON object"]),
     replace("manifest.json", "[1, 2]")),
    (Case("describe-manifest-foreign", ["cohort", "describe", P], ["manifest.json", "missing", "files"]),
     replace("manifest.json", '{"kind": "twinloop.product", "name": "x"}')),
    (Case("describe-manifest-bad-fields", ["cohort", "describe", P], ["manifest.json", "damaged fields"]),
     lambda p: (p / "manifest.json").write_text((p / "manifest.json").read_text().replace('"seed": 1', '"seed": "x"'))),
    (Case("describe-missing-patients", ["cohort", "describe", P], ["patients.parquet", "lacks"]),
     remove("patients.parquet")),
    (Case("describe-corrupt-observations", ["cohort", "describe", P], ["observations.parquet", "damaged"]),
     replace("observations.parquet", "not parquet at all")),
    (Case("describe-truncated-outcomes", ["cohort", "describe", P], ["outcomes.parquet", "damaged"]),
     truncate("outcomes.parquet")),
    (Case("describe-swapped-patients", ["cohort", "describe", P], ["patients.parquet", "differ from its manifest"]),
     lambda p: (p / "patients.parquet").write_bytes((p / "outcomes.parquet").read_bytes())),
    (Case("describe-missing-doses", ["cohort", "describe", P], ["doses.parquet", "missing"]),
     remove("doses.parquet")),
    (Case("describe-unfinished", ["cohort", "describe", P], ["manifest.json", "--resume"]),
     lambda p: (remove("manifest.json")(p), (p / ".parts").mkdir())),
    (Case("describe-not-a-product", ["cohort", "describe", "{tmp}"], ["not a twinloop product"]), None),
    (Case("describe-missing-folder", ["cohort", "describe", "{tmp}/nowhere"], ["nowhere", "manifest.json"]), None),
    (Case("fhir-limit-negative", ["cohort", "fhir", P, "--out", "{tmp}/fhir", "--limit", "-1"], ["--limit", "-1"]),
     None),
    (Case("fhir-limit-zero", ["cohort", "fhir", P, "--out", "{tmp}/fhir", "--limit", "0"], ["--limit", ">= 1"]), None),
    (Case("fhir-out-is-a-file", ["cohort", "fhir", P, "--out", "{tmp}/f"], ["--out", "is a file"], files={"f": "x"}),
     None),
    (Case("fhir-truncated-manifest", ["cohort", "fhir", P, "--out", "{tmp}/fhir"], ["manifest.json"]),
     truncate("manifest.json")),
    (Case("fhir-missing-doses", ["cohort", "fhir", P, "--out", "{tmp}/fhir"], ["doses.parquet"]),
     remove("doses.parquet")),
    (Case("fhir-corrupt-patients", ["cohort", "fhir", P, "--out", "{tmp}/fhir"], ["patients.parquet"]),
     replace("patients.parquet", "PAR1garbagePAR1")),
    (Case("lineage-missing-folder", ["lineage", "{tmp}/nowhere"], ["nowhere", "prov.json"]), None),
    (Case("lineage-not-an-artifact", ["lineage", "{tmp}"], ["prov.json", "not an artifact"]), None),
    (Case("lineage-damaged-prov", ["lineage", P], ["prov.json", "damaged"]), truncate("prov.json")),
    (Case("lineage-prov-json-damaged", ["lineage", P, "--prov-json"], ["prov.json", "damaged"]),
     replace("prov.json", "[1, 2]")),
    (Case("lineage-no-identity", ["lineage", P], ["manifest.json", "damaged"]), remove("manifest.json")),
    (Case("lineage-unknown-patient", ["lineage", P, "--patient", "vp99999"], ["vp99999", "not in product"]), None),
    (Case("lineage-patient-damaged-product", ["lineage", P, "--patient", "vp00001"], ["patients.parquet"]),
     remove("patients.parquet")),
    (Case("lineage-patient-not-a-product", ["lineage", "{tmp}", "--patient", "vp00001"], ["manifest.json"]), None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "damage"), DAMAGED, ids=[c.id for c, _ in DAMAGED])
def test_damaged_products_are_refused(
    case: Case, damage: Callable[[Path], None] | None, product: Path, tmp_path: Path
) -> None:
    shutil.copytree(product, tmp_path / "p")
    if damage is not None:
        damage(tmp_path / "p")
    check_refused(case, tmp_path)


INPUTS = "minute,insulin_U_per_min,carbs_g\n"
SIMULATE = ["simulate", "--inputs", "{tmp}/in.csv", "--out", "{tmp}/out.csv"]


def replay(case_id: str, rows: str, names: list[str], extra: list[str] | None = None) -> Case:
    return Case(case_id, [*SIMULATE, *(extra or [])], names, files={"in.csv": INPUTS + rows})


GOOD = "0,0.01,0\n1,0.01,0\n2,0.01,0\n"
OTHER_CASES = [
    replay("simulate-minute-text", "0,0.01,0\nnoon,0.01,0\n", ["minute", "row 2", "noon"]),
    replay("simulate-minute-negative", "-5,0.01,0\n1,0.01,0\n", ["minute", "-5"]),
    replay("simulate-minute-empty", "0,0.01,0\n,0.01,0\n2,0,0\n", ["minute", "row 2"]),
    replay("simulate-minute-nan", "0,0.01,0\nnan,0.01,0\n", ["minute", "row 2"]),
    replay("simulate-minute-inf", "0,0.01,0\ninf,0.01,0\n", ["minute", "row 2", "inf"]),
    replay("simulate-unsorted", "0,0.01,0\n5,0.01,0\n3,0.01,0\n", ["minutes", "row 3", "increasing"]),
    replay("simulate-duplicate-minute", "0,0.01,0\n1,0.01,0\n1,0.02,0\n", ["minutes", "row 3"]),
    replay("simulate-negative-insulin", "0,-0.01,0\n1,0.01,0\n", ["insulin_U_per_min", "row 1", ">= 0"]),
    replay("simulate-negative-carbs", "0,0.01,0\n1,0.01,-20\n2,0,0\n", ["carbs_g", "row 2", ">= 0"]),
    replay("simulate-infinite-carbs", "0,0.01,inf\n1,0.01,0\n", ["carbs_g", "row 1", "finite"]),
    replay("simulate-huge-range", "0,0.01,0\n1e9,0.01,0\n", ["minute", "1e+09", "527040", "GiB"]),
    replay("simulate-one-row", "0,0.01,0\n", ["two rows"]),
    Case("simulate-missing-column", SIMULATE, ["carbs_g"], files={"in.csv": "minute,insulin_U_per_min\n0,0\n1,0\n"}),
    Case("simulate-empty-file", SIMULATE, ["empty"], files={"in.csv": ""}),
    Case("simulate-missing-file", SIMULATE, ["in.csv", "does not exist"]),
    replay("simulate-unknown-patient", GOOD, ["adult#999", "patient"], ["--patient", "adult#999"]),
    replay("simulate-unknown-model", GOOD, ["nope"], ["--model", "nope"]),
    replay("simulate-non-t1d-model", GOOD, ["tgi-claret", "insulin", "carbs"], ["--model", "tgi-claret"]),
    Case("simulate-out-suffix", [*SIMULATE[:4], "{tmp}/out.txt"], ["--out", ".csv"], files={"in.csv": INPUTS + GOOD}),
    Case("simulate-out-under-a-file", [*SIMULATE[:4], "{tmp}/f/out.csv"], ["--out", "is a file"],
         files={"in.csv": INPUTS + GOOD, "f": "x"}),
    Case("simulate-out-is-a-folder", [*SIMULATE[:4], "{tmp}/d.csv"], ["--out", "directory"],
         files={"in.csv": INPUTS + GOOD, "d.csv/keep": "x"}),
    Case("demo-cohort-huge", ["demo", "--out", "{tmp}/demo", "--cohort", str(10**9)], ["--cohort", "200000", "TiB"]),
    Case("demo-cohort-zero", ["demo", "--out", "{tmp}/demo", "--cohort", "0"], ["--cohort", ">= 1"]),
    Case("demo-out-is-a-file", ["demo", "--out", "{tmp}/f"], ["--out", "is a file"], files={"f": "x"}),
    Case("models-show-unknown", ["models", "show", "nope"], ["nope"]),
    Case("models-check-unknown", ["models", "check", "tgi"], ["tgi"]),
    Case("from-real-n-zero", ["cohort", "from-real", "{tmp}", "--model", "tgi-claret", "--out", "{tmp}/o", "--n", "0"],
         ["--n", ">= 1"]),
    Case("from-real-steps-zero",
         ["cohort", "from-real", "{tmp}", "--model", "tgi-claret", "--out", "{tmp}/o", "--steps", "0"], ["--steps"]),
    Case("from-real-draws-negative",
         ["cohort", "from-real", "{tmp}", "--model", "tgi-claret", "--out", "{tmp}/o", "--population-draws", "-1"],
         ["--population-draws"]),
    Case("from-real-out-is-a-file", ["cohort", "from-real", "{tmp}", "--model", "tgi-claret", "--out", "{tmp}/f"],
         ["--out", "is a file"], files={"f": "x"}),
    Case("from-real-missing-data", ["cohort", "from-real", "{tmp}/none", "--model", "tgi-claret", "--out", "{tmp}/o"],
         ["DATA", "none", "not a folder"]),
    Case("from-real-bad-target",
         ["cohort", "from-real", "{tmp}", "--model", "tgi-claret", "--out", "{tmp}/o", "--target", "sex=female"],
         ["--target", "sex=female"]),
    Case("from-real-unknown-model", ["cohort", "from-real", "{tmp}", "--model", "nope", "--out", "{tmp}/o"], ["nope"]),
]  # fmt: skip


@pytest.mark.parametrize("case", OTHER_CASES, ids=str)
def test_simulate_models_and_from_real_refuse_bad_input(case: Case, tmp_path: Path) -> None:
    check_refused(case, tmp_path)


def test_the_corpus_is_large_enough() -> None:
    assert len(GENERATE_CASES) + len(DAMAGED) + len(OTHER_CASES) >= 60
