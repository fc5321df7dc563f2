"""The bad-input corpus of ``twinloop learn`` and ``twinloop govern``: every case is refused
with one clear error line (exit 2) naming the field, and nothing is written.

Products are referenced as ``{tmp}/<variant>``: a tiny valid NSCLC product (made once
per module) is copied into the case's folder, intact (``prod``) or damaged (``trunc``:
truncated manifest, ``corrupt``: a parquet file overwritten, ``t1d``: its manifest names
another model).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from badinput import Case, check_refused
from twinloop.cohort.spec import load_yaml
from twinloop.products.dataset import generate
from twinloop.products.spec import ProductSpec

ROOT = Path(__file__).parents[1]
NPE = load_yaml(ROOT / "examples" / "learn" / "npe_tgi_stein.yaml")
SUR = load_yaml(ROOT / "examples" / "learn" / "surrogate_tgi_stein.yaml")
CLO = load_yaml(ROOT / "examples" / "learn" / "closure_claret_resistance.yaml")
SERIES = "subject_id,time,value\np1,0,50\np1,42,45\np2,0,60\np2,42,58\n"
SECRET = "s3cretPW"


def spec(base: dict, **changes: object) -> str:
    """``base`` with ``changes`` (a value of ``...`` removes the key) as YAML text."""
    merged = {**base, **changes}
    return yaml.safe_dump({k: v for k, v in merged.items() if v is not ...}, sort_keys=False)


def nested(base: dict, key: str, **changes: object) -> str:
    return spec(base, **{key: {**base[key], **changes}})


def posterior(name: str, names: list[str], *extra: str, **changes: object) -> Case:
    text = spec(NPE, **changes)
    return Case(f"posterior-{name}", ["learn", "posterior", "{tmp}/s.yaml", "--out", "{tmp}/o", *extra], names,
                files={"s.yaml": text})  # fmt: skip


def posterior_text(name: str, names: list[str], text: str, *extra: str) -> Case:
    """A posterior case whose spec is ``text`` as given."""
    return Case(f"posterior-{name}", ["learn", "posterior", "{tmp}/s.yaml", "--out", "{tmp}/o", *extra], names,
                files={"s.yaml": text})  # fmt: skip


def surrogate(name: str, names: list[str], *extra: str, **changes: object) -> Case:
    return Case(f"surrogate-{name}", ["learn", "surrogate", "{tmp}/s.yaml", "--out", "{tmp}/o", *extra], names,
                files={"s.yaml": spec(SUR, **changes)})  # fmt: skip


def closure(name: str, names: list[str], *extra: str, csv: str | bytes = SERIES, **changes: object) -> Case:
    files: dict[str, str | bytes] = {"s.yaml": spec(CLO, **{"data": "series.csv", **changes}), "series.csv": csv}
    return Case(f"closure-{name}", ["learn", "closure", "{tmp}/s.yaml", "--out", "{tmp}/o", *extra], names,
                files=files)  # fmt: skip


def predictor(name: str, names: list[str], *args: str) -> Case:
    return Case(f"predictor-{name}", ["learn", "predictor", *args], names)


def report(name: str, names: list[str], *extra: str, product: str = "{tmp}/prod", **files: str | bytes) -> Case:
    return Case(f"report-{name}", ["govern", "report", product, "--out", "{tmp}/r/report.html", *extra], names,
                files=dict(files))  # fmt: skip


TAMPERED = {"p/predictor.pkl": b"not the pickle the manifest hashed",
            "p/manifest.json": json.dumps({"kind": "predictor", "task": "responder",
                                           "sha256": {"predictor.pkl": "0" * 64}})}  # fmt: skip

# fmt: off
CASES = [
    # --- learn posterior: the spec file, its keys, types and sizes ---------------------
    Case("posterior-missing-spec", ["learn", "posterior", "{tmp}/nope.yaml", "--out", "{tmp}/o"],
         ["nope.yaml", "does not exist"]),
    posterior_text("not-yaml", ["s.yaml", "not valid YAML"], "model: [tgi-stein\n"),
    posterior_text("a-list", ["s.yaml", "mapping"], "- model\n- tgi-stein\n"),
    posterior("unknown-key", ["epochs", "posterior spec", "accepts"], epochs=5),
    posterior("unknown-settings-key", ["settings", "n_sims"], settings={"n_sims": 100}),
    posterior("unknown-model", ["model", "tgi-nope", "tgi-stein"], model="tgi-nope"),
    posterior("unknown-parameter", ["parameters", "nonsense"], parameters=["y0", "nonsense"]),
    posterior("parameters-text", ["parameters", "list"], parameters="y0"),
    posterior("unknown-observable", ["design.observable", "glucose"],
              design={**NPE["design"], "observable": "glucose"}),
    posterior("unsorted-times", ["design.times", "increasing"], design={**NPE["design"], "times": [84, 42]}),
    posterior_text("infinite-time", ["design.times", "inf", "finite"],
                   nested(NPE, "design", times=[42, 84]).replace("- 84", "- .inf")),
    posterior("too-many-times", ["design.times", "10000"],
              design={**NPE["design"], "times": {"start": 1, "stop": 1e6, "every": 0.001}}),
    posterior("tiny-resolution", ["design.resolution", "1,000,000"],
              design={**NPE["design"], "resolution": 1e-6}),
    posterior("missing-one", ["design.missing", "1.5"], design={**NPE["design"], "missing": 1.5}),
    posterior("negative-noise", ["noise", "additive", "-1"],
              design={**NPE["design"], "noise": {"additive": -1, "proportional": 0.1}}),
    posterior("zero-simulations", ["n_simulations", "0", "--simulations"], "--simulations", "0"),
    posterior("zero-epochs", ["max_epochs", "0", "--epochs"], "--epochs", "0"),
    posterior("huge-simulations", ["n_simulations", "1,000,000", "GiB"], "--simulations", "2000000000"),
    posterior("text-simulations", ["n_simulations", "'many'", "whole number"],
              settings={**NPE["settings"], "n_simulations": "many"}),
    posterior_text("nan-epochs", ["max_epochs", "nan"],
                   nested(NPE, "settings", max_epochs=7).replace("max_epochs: 7", "max_epochs: .nan")),
    posterior("negative-sbc", ["checks.sbc_simulations", "-5"], checks={"sbc_simulations": -5}),
    posterior("population-outside", ["population", "outside the spec's folder"], population="../../../etc/passwd"),
    Case("posterior-out-a-file", ["learn", "posterior", "{tmp}/s.yaml", "--out", "{tmp}/f"], ["--out", "is a file"],
         files={"s.yaml": spec(NPE), "f": "x"}),
    Case("posterior-out-under-a-file", ["learn", "posterior", "{tmp}/s.yaml", "--out", "{tmp}/f/o"],
         ["--out", "under the file"], files={"s.yaml": spec(NPE), "f": "x"}),
    Case("posterior-out-not-empty", ["learn", "posterior", "{tmp}/s.yaml", "--out", "{tmp}/o"],
         ["--out", "already holds files"], files={"s.yaml": spec(NPE), "o/manifest.json": "{}"}),
    # --- learn surrogate ------------------------------------------------------------------
    surrogate("negative-steps", ["steps", "-1", "--steps"], "--steps", "-1"),
    surrogate("zero-simulations", ["n_simulations", "0"], "--simulations", "0"),
    surrogate("infinite-simulations", ["n_simulations", "inf"], n_simulations=float("inf")),
    surrogate("unknown-transform", ["transform", "sqrt", "log"], transform="sqrt"),
    surrogate("unknown-observable", ["observable", "tumour_volume"], observable="tumour_volume"),
    surrogate("empty-times", ["times", "list"], times=[]),
    surrogate("negative-seed", ["seed", "-1"], seed=-1),
    surrogate("boolean-width", ["width", "True"], width=True),
    surrogate("unknown-key", ["epoch", "surrogate spec"], epoch=3),
    surrogate("no-model", ["model", "needs"], model=...),
    # --- learn closure: spec and the CSV of observed series ----------------------------
    Case("closure-missing-csv", ["learn", "closure", "{tmp}/s.yaml", "--out", "{tmp}/o"],
         ["data", "gone.csv", "does not exist"], files={"s.yaml": spec(CLO, data="gone.csv")}),
    closure("csv-outside", ["data", "outside the spec's folder"], data="../../series.csv"),
    closure("zero-steps", ["steps", "0"], "--steps", "0"),
    closure("unknown-closure", ["closure", "tgi-stein:magic"], closure="tgi-stein:magic"),
    closure("model-key", ["model", "closure spec"], model="tgi-stein"),
    closure("zero-learning-rate", ["learning_rate", "0"], learning_rate=0),
    closure("csv-columns", ["series.csv", "subject_id, time, value"], csv="id,t,y\n1,0,5\n"),
    closure("csv-text-value", ["series.csv", "value", "row 2"], csv="subject_id,time,value\np1,0,5\np1,1,big\n"),
    closure("csv-duplicates", ["series.csv", "conflicting", "p1"], csv="subject_id,time,value\np1,0,5\np1,0,7\n"),
    closure("csv-negative", ["series.csv", "value", "negative"], csv="subject_id,time,value\np1,0,-5\n"),
    closure("csv-empty", ["series.csv", "empty"], csv=""),
    closure("csv-no-subject", ["series.csv", "without a subject_id", "row 2"],
            csv="subject_id,time,value\np1,0,50\n,1,2\n"),
    closure("huge-cycles", ["treatment[0].n_cycles", "1e+09", "100000"],
            treatment={**CLO["treatment"], "n_cycles": 10**9}),
    closure("treatment-unknown-key", ["treatment[0]", "dose"], treatment={**CLO["treatment"], "dose": 5}),
    closure("treatment-unknown-kind", ["treatment[0].kind", "surgery"], treatment={"kind": "surgery"}),
    posterior("treatment-not-taken", ["treatment[0]", "tgi-stein", "chemotherapy"], treatment=CLO["treatment"]),
    closure("csv-not-utf8", ["series.csv", "UTF-8"], csv=b"subject_id,time,value\n\xff\xfe,0,5\n"),
    # --- learn predictor ------------------------------------------------------------------
    predictor("missing-product", ["SYNTHETIC", "nope", "does not exist"], "{tmp}/nope", "--out", "{tmp}/o"),
    predictor("truncated-manifest", ["SYNTHETIC", "manifest.json", "not valid JSON"], "{tmp}/trunc", "--out",
              "{tmp}/o"),
    predictor("corrupt-parquet", ["SYNTHETIC", "patients.parquet", "SHA-256"], "{tmp}/corrupt", "--out", "{tmp}/o"),
    predictor("wrong-model", ["SYNTHETIC", "t1d-uva-padova", "sum_of_diameters", "--task"], "{tmp}/t1d", "--out",
              "{tmp}/o"),
    predictor("unknown-task", ["--task", "survival"], "{tmp}/prod", "--out", "{tmp}/o", "--task", "survival"),
    predictor("corrupt-real", ["--real", "SHA-256"], "{tmp}/prod", "--real", "{tmp}/corrupt", "--out", "{tmp}/o"),
    predictor("negative-seed", ["--seed", "-1"], "{tmp}/prod", "--out", "{tmp}/o", "--seed", "-1"),
    predictor("out-a-file", ["--out", "is a file"], "{tmp}/prod", "--out", "{tmp}/prod/manifest.json"),
    # --- govern report --------------------------------------------------------------------
    report("missing-product", ["ARTIFACT", "nope", "does not exist"], product="{tmp}/nope"),
    report("truncated-manifest", ["ARTIFACT", "not valid JSON"], product="{tmp}/trunc"),
    report("zero-attacks", ["--n-attacks", "0"], "--n-attacks", "0"),
    Case("report-registry-unreachable",
         ["govern", "report", "{tmp}/prod", "--out", "{tmp}/r/report.html", "--registry",
          f"postgresql+psycopg://ann:{SECRET}@127.0.0.1:1/twins"],
         ["registry", "ann:***@127.0.0.1:1"], absent=[SECRET]),
    report("registry-missing-file", ["--registry", "twins.db", "does not exist"], "--registry", "{tmp}/twins.db"),
    report("registry-not-sqlite", ["--registry", "not a SQLite database"], "--registry", "{tmp}/t.db",
           **{"t.db": "plain text, not a database\n" * 20}),
    report("registry-not-a-registry", ["--registry", "not a twin registry"], "--registry", "sqlite:///{tmp}/e.db",
           **{"e.db": b""}),
    report("registry-sqlite-memory", ["--registry", "sqlite://", "names no SQLite file"], "--registry", "sqlite://"),
    report("predictor-tampered", ["--predictor", "SHA-256", "changed"], "--predictor", "{tmp}/p", **TAMPERED),
    report("predictor-missing-file", ["--predictor", "predictor.pkl"], "--predictor", "{tmp}/p",
           **{"p/manifest.json": json.dumps({"kind": "predictor", "task": "responder"})}),
    report("predictor-a-file", ["--predictor", "not a folder"], "--predictor", "{tmp}/p.txt", **{"p.txt": "x"}),
    report("reference-other-model", ["--reference", "t1d-uva-padova", "tgi-claret"], "--reference", "{tmp}/t1d"),
    report("reference-corrupt", ["--reference", "patients.parquet", "SHA-256"], "--reference", "{tmp}/corrupt"),
    report("posterior-no-sbc", ["--posterior", "sbc.json"], "--posterior", "{tmp}/npe", **{"npe/x.txt": "x"}),
    report("posterior-corrupt-sbc", ["--posterior", "not valid JSON"], "--posterior", "{tmp}/npe",
           **{"npe/sbc.json": '{"ks_pvalues": {'}),
    Case("report-out-a-folder", ["govern", "report", "{tmp}/prod", "--out", "{tmp}/prod"], ["--out", "folder"]),
    Case("report-out-under-a-file", ["govern", "report", "{tmp}/prod", "--out", "{tmp}/prod/manifest.json/r.html"],
         ["--out", "under the file"]),
    # --- govern privacy -------------------------------------------------------------------
    Case("privacy-zero-attacks", ["govern", "privacy", "{tmp}/prod", "{tmp}/prod", "--n-attacks", "0"],
         ["--n-attacks", "0"]),
    Case("privacy-negative-attacks", ["govern", "privacy", "{tmp}/prod", "{tmp}/prod", "--n-attacks", "-5"],
         ["--n-attacks", "-5"]),
    Case("privacy-unknown-quasi", ["govern", "privacy", "{tmp}/prod", "{tmp}/prod", "--quasi", "age,zipcode"],
         ["--quasi", "zipcode", "choose from"]),
    Case("privacy-empty-quasi", ["govern", "privacy", "{tmp}/prod", "{tmp}/prod", "--quasi", "age,,sex"],
         ["--quasi", "none empty"]),
    Case("privacy-unknown-secret", ["govern", "privacy", "{tmp}/prod", "{tmp}/prod", "--secrets", "income"],
         ["--secrets", "income"]),
    Case("privacy-corrupt-synthetic", ["govern", "privacy", "{tmp}/prod", "{tmp}/corrupt"],
         ["SYNTHETIC", "SHA-256"]),
    Case("privacy-other-model", ["govern", "privacy", "{tmp}/prod", "{tmp}/t1d"], ["SYNTHETIC", "t1d-uva-padova"]),
    Case("privacy-out-under-a-file", ["govern", "privacy", "{tmp}/prod", "{tmp}/prod", "--out", "{tmp}/f/x.json"],
         ["--out", "under the file"], files={"f": "x"}),
    # --- govern drift ---------------------------------------------------------------------
    Case("drift-truncated-current", ["govern", "drift", "{tmp}/prod", "{tmp}/trunc"], ["CURRENT", "not valid JSON"]),
    Case("drift-missing-reference", ["govern", "drift", "{tmp}/nope", "{tmp}/prod"], ["REFERENCE", "does not exist"]),
    Case("drift-other-model", ["govern", "drift", "{tmp}/prod", "{tmp}/t1d"], ["CURRENT", "same model"]),
    Case("drift-out-a-folder", ["govern", "drift", "{tmp}/prod", "{tmp}/prod", "--out", "{tmp}/prod"],
         ["--out", "folder"]),
    # --- govern crate ---------------------------------------------------------------------
    Case("crate-truncated-manifest", ["govern", "crate", "{tmp}/trunc", "--out", "{tmp}/c"],
         ["PRODUCT", "not valid JSON"]),
    Case("crate-corrupt-parquet", ["govern", "crate", "{tmp}/corrupt", "--out", "{tmp}/c"], ["PRODUCT", "SHA-256"]),
    Case("crate-out-exists", ["govern", "crate", "{tmp}/prod", "--out", "{tmp}/c"], ["--out", "already exists"],
         files={"c/x": "x"}),
    Case("crate-out-under-a-file", ["govern", "crate", "{tmp}/prod", "--out", "{tmp}/f/c"],
         ["--out", "under the file"], files={"f": "x"}),
]
# fmt: on


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny valid NSCLC product (20 patients)."""
    raw = load_yaml(ROOT / "examples" / "nsclc_two_schedules.yaml")
    out = tmp_path_factory.mktemp("badinput-learn") / "product"
    generate(ProductSpec.from_dict({**raw, "name": "tiny", "n": 20, "seed": 1, "chunk_size": 20}), out, progress=False)
    return out


def variants(product: Path, folder: Path, case: Case) -> None:
    """Copy the product variants the case names into its folder."""
    used = " ".join(case.args)
    for name in ("prod", "trunc", "corrupt", "t1d"):
        if "{tmp}/" + name not in used:
            continue
        target = folder / name
        shutil.copytree(product, target)
        manifest = target / "manifest.json"
        if name == "trunc":
            manifest.write_text(manifest.read_text()[:100])
        elif name == "corrupt":
            (target / "patients.parquet").write_bytes(b"PAR1 not really")
        elif name == "t1d":
            data = json.loads(manifest.read_text())
            data["model"]["id"] = "t1d-uva-padova"
            manifest.write_text(json.dumps(data))


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_refused_cleanly(case: Case, product: Path, tmp_path: Path) -> None:
    variants(product, tmp_path, case)
    check_refused(case, tmp_path)


def test_a_job_that_fails_after_writing_leaves_no_out(tmp_path: Path) -> None:
    """A failure after the checks (here a simulation) removes what the job wrote, and the
    folders it created, so a retry with the same --out starts clean."""
    from twinloop.errors import SimulationError
    from twinloop.learn.outdir import artifact_folder

    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new" / "artifact", empty):
        with pytest.raises(SimulationError), artifact_folder(out):
            (out / "npe").mkdir(parents=True)
            (out / "npe" / "weights.eqx").write_bytes(b"half")
            (out / "sbc.json").write_text("{")
            raise SimulationError("members failed to integrate")
    assert not (tmp_path / "new").exists()
    assert empty.is_dir() and not any(empty.iterdir())


def test_valid_inputs_pass_the_checks(product: Path, tmp_path: Path) -> None:
    """The checks refuse what is wrong, not what is right: an intact product, an existing
    registry (read, not created) and the example job specs."""
    from twinloop.govern.inputs import registry_url
    from twinloop.learn.job_spec import check_closure, check_posterior, check_surrogate
    from twinloop.products.checked import open_product
    from twinloop.store.registry import TwinRegistry

    assert open_product(product, "PRODUCT").manifest["name"] == "tiny"
    db = tmp_path / "twins.db"
    TwinRegistry(f"sqlite:///{db}")
    assert registry_url(str(db)) == registry_url(f"sqlite:///{db}") == f"sqlite:///{db}"
    assert check_posterior(NPE)["settings"]["n_simulations"] == 20_000
    assert check_surrogate(SUR)["times"] == [91.0, 182.0, 364.0]
    assert check_closure(CLO)["treatment"][0]["n_cycles"] == 6
