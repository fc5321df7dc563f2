"""Attacks found by an outside tester (issue 16), each replayed and refused with a clear
error and no side effect: formula escapes, crafted pickles, path-escaping names,
leaked passwords, YAML alias bombs and spec paths that climb out of their folder."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinloop.cli.app import app
from twinloop.errors import InputError

runner = CliRunner()
PASSWORD = "s3cr3t-pw"
PG_URL = f"postgresql+psycopg://admin:{PASSWORD}@127.0.0.1:1/twins"


def _flat(text: str) -> str:
    return " ".join(text.split())


# --- (a) formulas in specs -------------------------------------------------------
def _escapes(marker: Path) -> list[str]:
    shell = f"touch {marker}"
    return [
        "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]()"
        f"._module.__builtins__['__import__']('os').system('{shell}')",
        f"().__class__.__base__.__subclasses__()[-1].__init__.__globals__['sys'].modules['os'].system('{shell}')",
        f"__import__('os').system('{shell}')",
        f"exec('import os; os.system(\"{shell}\")')",
        "(lambda: KL)()",
        "log.__self__",
        "KL if KL else KL",
        "log(x=KL)",
    ]


def _product_spec(folder: Path, population: str) -> Path:
    spec = folder / "product.yaml"
    spec.write_text(f"model: tgi-claret\nname: attack\nn: 5\nduration: 100\npopulation: {population}\n")
    return spec


@pytest.mark.parametrize("key", ["constraints", "derived"])
def test_formula_escape_in_a_spec_is_refused_before_anything_runs(tmp_path: Path, key: str) -> None:
    marker = tmp_path / "pwned"
    expression = _escapes(marker)[0]
    body = (
        f"constraints:\n  - {{expression: {json.dumps(expression)}, lower: 0}}\n"
        if key == "constraints"
        else f"derived:\n  ratio: {json.dumps(expression)}\n"
    )
    (tmp_path / "pop.yaml").write_text("model: tgi-claret\nextends: default\n" + body)
    out = tmp_path / "product"
    result = runner.invoke(app, ["cohort", "generate", str(_product_spec(tmp_path, "pop.yaml")), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "is not allowed" in _flat(result.output) and "a formula may use" in _flat(result.output)
    assert ("constraints[" if key == "constraints" else "derived.ratio") in _flat(result.output)
    assert not marker.exists() and not out.exists()


def test_every_escape_attempt_is_refused_by_the_formula_parser(tmp_path: Path) -> None:
    from twinloop.cohort.expressions import Formula

    marker = tmp_path / "pwned"
    for text in _escapes(marker):
        with pytest.raises(InputError, match=r"constraints\[0\]\.expression is .*a formula may use"):
            Formula(text, "constraints[0].expression")
    assert not marker.exists()


def test_allowed_formulas_still_evaluate() -> None:
    import numpy as np

    from twinloop.cohort.expressions import Formula

    names = {"KL": np.array([0.01, 0.02]), "age": np.array([10.0, 70.0]), "sex": np.array(["male", "female"])}
    assert np.allclose(Formula("log(2) / KL", "c")(names), np.log(2) / names["KL"])
    assert Formula("12 <= age < 65 and not (sex == 'female')", "c")(names).tolist() == [False, False]
    assert np.allclose(Formula("max(age, 18) ** 0.5 - -1", "c")(names), [np.sqrt(18) + 1, np.sqrt(70) + 1])
    with pytest.raises(InputError, match=r"unknown name\(s\) \['weight'\]"):
        Formula("weight / 70", "derived.w")(names)


def test_bool_constants_are_floats_so_no_exact_big_integer_or_repeated_text() -> None:
    import numpy as np

    from twinloop.cohort.expressions import Formula

    value = Formula("(True+True)**(True+True+True)", "c")({})
    assert value == 8.0 and isinstance(value, float | np.floating)
    assert isinstance(Formula("(1 < 2) + (1 < 2)", "c")({}), float | np.floating)
    for text in ('"x"*((True+True)**40)', "'ab' + 'cd'", "KL < 'x'", "-'x'", "log('x')"):
        with pytest.raises(InputError, match=r"text is allowed only as an operand of == or !="):
            Formula(text, "derived.w")
    sex = {"sex": np.array(["male", "female"], dtype=object)}
    for text in ("sex * ((True+True)**40)", "-sex", "min(sex, sex)", "sex ** 2"):
        with pytest.raises(InputError, match=r"derived\.w: .*arithmetic on text is not allowed"):
            Formula(text, "derived.w")(sex)


def test_a_tower_of_powers_finishes_at_once_as_inf() -> None:
    import subprocess
    import sys

    tower = "(True+True)**" * 7 + "(True+True)"
    code = f"from twinloop.cohort.expressions import Formula; print(float(Formula({tower!r}, 'c')({{}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)  # was: never
    assert done.returncode == 0 and done.stdout.strip() == "inf", done.stderr


def test_runtime_failures_of_a_formula_are_input_errors_naming_it() -> None:
    import numpy as np

    from twinloop.cohort.expressions import Formula

    names = {"a": np.ones(2), "b": np.ones(3)}
    with pytest.raises(InputError, match=r"derived\.w: 'min\(a, b\)' cannot be evaluated \(ValueError"):
        Formula("min(a, b)", "derived.w")(names)
    with pytest.raises(InputError, match=r"c: '1 / 0' cannot be evaluated \(ZeroDivisionError"):
        Formula("1 / 0", "c")({})
    with pytest.raises(InputError, match="is too large"):
        Formula("1" + "0" * 400, "c")


@pytest.mark.parametrize(
    ("text", "problem"),
    [("-" * 120 + "KL", "nested more than 100 levels deep"), ("+".join(["K*K*K*K*K"] * 60), "has more than 300 parts"),
     ("KL+" * 400 + "KL", "longer than 1000 characters")],
)  # fmt: skip
def test_oversized_formulas_are_refused_before_they_run(text: str, problem: str) -> None:
    from twinloop.cohort.expressions import Formula

    with pytest.raises(InputError, match=problem):
        Formula(text, "derived.w")


@pytest.mark.parametrize(
    ("formula", "message"),
    [("1 / 0", r"derived\.bad: '1 / 0' cannot be evaluated"), ("sex", r"derived\.bad: 'sex' gives object values")],
)
def test_a_derived_quantity_that_fails_is_named_as_derived(formula: str, message: str) -> None:
    from twinloop.cohort import Population

    population = Population.from_dict({"model": "tgi-claret", "extends": "default", "derived": {"bad": formula}})
    with pytest.raises(InputError, match=message):
        population.sample(5, seed=0)


def test_a_constraint_is_compiled_once_and_named_by_its_place_in_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    import twinloop.cohort.spec as spec

    made: list[str] = []
    real = spec.Formula
    monkeypatch.setattr(spec, "Formula", lambda text, where: made.append(where) or real(text, where))
    constraint = spec.Constraint.parse(3, {"expression": "1 / 0", "name": "r"})
    assert made == ["constraints[3].expression"]
    with pytest.raises(InputError, match=r"constraints\[3\]\.expression: '1 / 0' cannot be evaluated"):
        constraint.evaluate({})


# --- (b) pickles -------------------------------------------------------------------
class _Shell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def _predictor_folder(folder: Path, blob: bytes, name: str = "predictor.pkl", hashed: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(blob)
    manifest: dict[str, object] = {"kind": "predictor", "task": "responder", "files": [name, "report.json"]}
    if hashed:
        manifest["sha256"] = {name: hashlib.sha256(blob).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_crafted_joblib_of_the_report_is_not_loaded(tmp_path: Path) -> None:
    import joblib

    from twinloop.govern.report import predictor_evidence

    marker = tmp_path / "pwned"
    folder = tmp_path / "responder"
    folder.mkdir()
    joblib.dump(_Shell(f"touch {marker}"), folder / "predictor.joblib")
    (folder / "manifest.json").write_text(json.dumps({"kind": "predictor", "task": "responder"}))
    with pytest.raises(InputError, match="twinloop loads only predictors it wrote and can verify"):
        predictor_evidence(folder, tmp_path / "reference", tmp_path / "training", seed=0)
    assert not marker.exists()


def test_crafted_pickle_with_a_forged_manifest_hash_is_refused_by_the_allowlist(tmp_path: Path) -> None:
    from twinloop.learn.predictor_file import load_predictor

    marker = tmp_path / "pwned"
    folder = _predictor_folder(tmp_path / "p", pickle.dumps(_Shell(f"touch {marker}")))
    with pytest.raises(InputError, match=r"refers to posix\.system, which a twinloop predictor never holds"):
        load_predictor(folder)
    assert not marker.exists()


def _trained(tmp_path: Path) -> tuple[object, Path]:
    import numpy as np
    import pandas as pd

    from twinloop.learn.predictor import RESPONSE_FEATURES, Predictor
    from twinloop.learn.predictor_file import save_predictor

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(120, len(RESPONSE_FEATURES))), columns=list(RESPONSE_FEATURES))
    frame["label"] = (frame["age"] > 0).astype(int)
    predictor = Predictor(seed=0).fit(frame)
    folder = tmp_path / "genuine"
    folder.mkdir()
    digest = save_predictor(predictor, folder)
    (folder / "manifest.json").write_text(json.dumps({"kind": "predictor", "sha256": {"predictor.pkl": digest}}))
    return predictor, folder


def test_a_predictor_changed_after_twinloop_wrote_it_is_refused(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from twinloop.learn.predictor import RESPONSE_FEATURES
    from twinloop.learn.predictor_file import load_predictor

    predictor, folder = _trained(tmp_path)
    frame = pd.DataFrame(np.ones((3, len(RESPONSE_FEATURES))), columns=list(RESPONSE_FEATURES))
    assert np.allclose(load_predictor(folder).predict_proba(frame), predictor.predict_proba(frame))  # type: ignore[attr-defined]
    marker = tmp_path / "pwned"
    (folder / "predictor.pkl").write_bytes(pickle.dumps(_Shell(f"touch {marker}")))
    with pytest.raises(InputError, match="the file was changed after twinloop wrote it"):
        load_predictor(folder)
    assert not marker.exists()


def test_a_pickle_that_sets_attributes_on_an_allowed_class_is_refused_first(tmp_path: Path) -> None:
    from twinloop.learn.predictor import Predictor
    from twinloop.learn.predictor_file import load_predictor

    original = Predictor.__dict__["predict_proba"]
    blob = b"ctwinloop.learn.predictor\nPredictor\n(N}Vpredict_proba\nI1\nstb."  # BUILD (None, {...}) on the class
    try:
        with pytest.raises(InputError, match=r"sets attributes on Predictor itself"):
            load_predictor(_predictor_folder(tmp_path / "p", blob))
        assert Predictor.__dict__["predict_proba"] is original
    finally:
        Predictor.predict_proba = original  # type: ignore[method-assign]


@pytest.mark.parametrize("blob", [b"\x80\x05garbage", b"", b"\x80\x05N", b"cnumpy\ndtype\n(Vq8\ntR."])
def test_unreadable_pickles_are_input_errors(tmp_path: Path, blob: bytes) -> None:
    from twinloop.learn.predictor_file import load_predictor

    with pytest.raises(InputError, match=r"predictor\.pkl"):
        load_predictor(_predictor_folder(tmp_path / "p", blob))


def _tampered(tmp_path: Path, change: str) -> Path:
    """A genuine predictor whose first tree is changed, saved with a matching hash."""
    import numpy as np

    from twinloop.learn.predictor_file import save_predictor

    predictor, folder = _trained(tmp_path)
    tree = predictor.model_._predictors[0][0]  # type: ignore[attr-defined]
    split = int(np.flatnonzero(tree.nodes["is_leaf"] == 0)[-1])
    if change == "cycle":
        tree.nodes["left"][split] = 0  # back to the root: sklearn's nogil loop would never end
    elif change == "negative feature":
        tree.nodes["feature_idx"][split] = -3
    elif change == "categorical":
        tree.nodes["is_categorical"][split] = 1
        tree.nodes["bitset_idx"][split] = 1000
    elif change == "dtype":
        fields = [(n, "<i8" if n == "left" else tree.nodes.dtype[n].str) for n in tree.nodes.dtype.names]
        tree.nodes = tree.nodes.astype(np.dtype(fields))
    digest = save_predictor(predictor, folder)
    (folder / "manifest.json").write_text(json.dumps({"kind": "predictor", "sha256": {"predictor.pkl": digest}}))
    return folder


@pytest.mark.parametrize(
    ("change", "problem"),
    [("cycle", "loop back"), ("negative feature", "a split is on a feature outside"),
     ("categorical", "a categorical split has no bitset"), ("dtype", "(not sklearn's node records|Cannot cast)")],
)  # fmt: skip
def test_malformed_trees_are_refused(tmp_path: Path, change: str, problem: str) -> None:
    from twinloop.learn.predictor_file import load_predictor

    with pytest.raises(InputError, match=f"predictor\\.pkl.*{problem}"):
        load_predictor(_tampered(tmp_path, change))


# --- (c) names that become file names --------------------------------------------
def test_path_escaping_twin_name_is_refused_at_creation_and_at_show(tmp_path: Path) -> None:
    from sqlalchemy import insert

    from twinloop.store.registry import TwinRegistry, twins

    db = f"sqlite:///{tmp_path / 'twins.db'}"
    figs = tmp_path / "work" / "figs"
    evil = "../../../escaped"
    data = tmp_path / "none.csv"
    created = runner.invoke(app, ["twin", "create", "--model", "t1d-uva-padova", "--data", str(data), "--name", evil,
                                  "--db", db])  # fmt: skip
    assert created.exit_code == 2 and "--name is '../../../escaped'; it becomes a file name" in _flat(created.output)
    assert TwinRegistry(db).twins().empty
    with TwinRegistry(db).engine.begin() as conn:  # a registry written before names were checked
        conn.execute(insert(twins).values(id=evil, subject_id="s", model_id="m", model_version="1",
                                          created_at=datetime.now(UTC), current_version=1))  # fmt: skip
    shown = runner.invoke(app, ["twin", "show", evil, "--out", str(figs), "--db", db])
    assert shown.exit_code == 2 and "it becomes a file name" in _flat(shown.output)
    assert not any(p.name.endswith("fan-chart.html") for p in tmp_path.rglob("*")) and not figs.exists()


@pytest.mark.parametrize("name", ["../../../escaped", "a/b", "..", ".hidden", "a\\b", "x" * 200, ""])
def test_names_with_separators_are_refused(name: str) -> None:
    from twinloop._paths import check_name

    with pytest.raises(InputError, match="it becomes a file name"):
        check_name("--name", name)


def test_path_escaping_product_name_is_refused(tmp_path: Path) -> None:
    from twinloop.products.spec import ProductSpec

    with pytest.raises(InputError, match=re.escape("name is '../../x'; it becomes a file name")):
        ProductSpec.from_dict({"model": "tgi-claret", "name": "../../x", "n": 5, "duration": 100})


# --- (d) secrets ---------------------------------------------------------------------
def test_registry_password_never_appears_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = runner.invoke(app, ["twin", "show", "ada", "--db", PG_URL])
    assert shown.exit_code == 2 and PASSWORD not in shown.output
    assert "admin:***@127.0.0.1:1/twins" in _flat(shown.output)
    monkeypatch.setenv("TWINLOOP_DB", PG_URL.replace(":1/", ":notaport/"))
    env = runner.invoke(app, ["twin", "sync", "ada", "--data", "x.csv"])
    assert env.exit_code == 2 and PASSWORD not in env.output and "***" in env.output


def test_registry_password_never_appears_in_the_report_prov(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import twinloop.cli.govern as cli_govern
    import twinloop.govern.html_report as html_report
    import twinloop.govern.report as report

    product = tmp_path / "product"
    product.mkdir()
    (product / "manifest.json").write_text(json.dumps({"kind": "product"}))
    monkeypatch.setattr(cli_govern, "_check_report_inputs", lambda product, out, paths, registry, n: registry)
    monkeypatch.setattr(report, "build_report", lambda inputs, progress: {"inputs": "stubbed"})
    monkeypatch.setattr(html_report, "render", lambda result: "<html></html>")
    monkeypatch.setattr(cli_govern, "_registry_inputs", lambda registry: (None, []))
    monkeypatch.setattr(cli_govern, "headlines", lambda result: [])
    out = tmp_path / "report" / "report.html"
    cli_govern.write_report(product, out, dict.fromkeys(("reference", "predictor", "posterior")), PG_URL, 10, False)
    written = "".join(p.read_text() for p in out.parent.iterdir())
    assert PASSWORD not in written and "admin:***@127.0.0.1" in (out.parent / "prov.json").read_text()


def test_secrets_are_masked_in_any_text() -> None:
    from twinloop._secrets import mask_secrets

    assert mask_secrets(f"at {PG_URL}: refused") == "at postgresql+psycopg://admin:***@127.0.0.1:1/twins: refused"
    assert mask_secrets("host=db password=hunter2 dbname=x") == "host=db password=*** dbname=x"
    assert mask_secrets("sqlite:///twins.db") == "sqlite:///twins.db"


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://admin:pa ss'w\"rd@db/twins",
        "postgresql://admin:p@ss w0rd@db/twins is unreachable",
        "host=db password='pa ss\\'word' dbname=x",
        'host=db password="pa ss word" dbname=x',
        "Driver={ODBC Driver 18};Server=db;UID=me;PWD={pa;ss}}word};Database=x",
        "Server=db;Uid=me;Pwd=pa ss word;Database=x",
        "DRIVER=x;PWD=pa ss word",
        "mssql+pyodbc:///?odbc_connect=SERVER%3Ddb%3BPWD%3Dx;passwd=pa ss word;",
    ],
)
def test_passwords_with_quotes_spaces_or_odbc_keys_are_masked(text: str) -> None:
    from twinloop._secrets import mask_secrets

    masked = mask_secrets(text)
    assert "***" in masked
    assert not any(part in masked for part in ("pa ss", "ss w0rd", "ss'w", "ss}}word", "ss word")), masked


# --- (e) YAML bombs -----------------------------------------------------------------
def _bomb(levels: int, width: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "model: tgi-claret\nn: 5\nduration: 100\n" + "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(_bomb(9, 9))
    assert len(spec.read_bytes()) < 600
    out = tmp_path / "product"
    result = runner.invoke(app, ["cohort", "generate", str(spec), "--out", str(out)])
    assert result.exit_code == 2 and "more than 64 YAML aliases" in _flat(result.output)
    assert not out.exists()


def test_yaml_expanding_past_the_limit_with_few_aliases_is_refused(tmp_path: Path) -> None:
    from twinloop._yaml import load_yaml

    spec = tmp_path / "bomb.yaml"
    spec.write_text(_bomb(7, 9))  # 54 aliases, 9**7 values once expanded
    with pytest.raises(InputError, match="would expand to more than 200000 values"):
        load_yaml(spec)


def test_oversized_yaml_is_refused_unread(tmp_path: Path) -> None:
    from twinloop._yaml import load_yaml

    spec = tmp_path / "big.yaml"
    spec.write_text("model: tgi-claret\n" + "# padding\n" * 200_000)
    with pytest.raises(InputError, match="may hold at most 1048576 bytes"):
        load_yaml(spec)


# --- (f) spec paths -----------------------------------------------------------------
def test_population_path_climbing_out_of_the_spec_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "passwd"
    secret.write_text("root:x:0:0:SECRET-CONTENT:/root:/bin/bash\n")
    folder = tmp_path / "specs"
    folder.mkdir()
    for population in ("../../../../etc/passwd", "../outside/passwd"):
        result = runner.invoke(app, ["cohort", "generate", str(_product_spec(folder, population)), "--out",
                                     str(tmp_path / "o")])  # fmt: skip
        assert result.exit_code == 2 and "leads outside the spec's folder" in _flat(result.output)
        assert "root:x" not in result.output and "SECRET-CONTENT" not in result.output


def test_a_file_that_fails_to_parse_is_never_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:SECRET-CONTENT:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/bin/sh\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: tgi-claret\nkey: [SECRET-CONTENT\n")
    for population in (str(secret), "broken.yaml"):  # absolute paths are allowed, then read safely
        result = runner.invoke(app, ["cohort", "generate", str(_product_spec(tmp_path, population)), "--out",
                                     str(tmp_path / "o")])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "SECRET-CONTENT" not in result.output and "root:x" not in result.output
    assert "must hold a YAML mapping" in _flat(runner.invoke(app, ["cohort", "generate", str(_product_spec(
        tmp_path, str(secret))), "--out", str(tmp_path / "o")]).output)  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_a_spec_path_inside_the_folder_still_resolves(tmp_path: Path) -> None:
    from twinloop._paths import spec_path

    (tmp_path / "sub").mkdir()
    assert spec_path(tmp_path, "sub/../sub/pop.yaml", "population") == (tmp_path / "sub" / "pop.yaml").resolve()
    assert spec_path(tmp_path, "/abs/pop.yaml", "population") == Path("/abs/pop.yaml")


# --- (g) error messages quote user text as plain text ---------------------------------
def test_markup_in_user_text_is_printed_as_plain_text(tmp_path: Path) -> None:
    name = "[/bold][link=http://x]y[/link]:x:"
    shown = runner.invoke(app, ["twin", "show", name, "--db", f"sqlite:///{tmp_path / 'twins.db'}"])
    assert shown.exit_code == 2, shown.output
    assert name in shown.output and "\u274c" not in shown.output and "error:" in shown.output
    spec = tmp_path / "[/bold]:x:.yaml"
    generated = runner.invoke(app, ["cohort", "generate", str(spec), "--out", str(tmp_path / "o")])
    assert generated.exit_code == 2 and "[/bold]:x:.yaml" in _flat(generated.output)


def test_every_cli_module_reports_errors_through_one_plain_text_printer() -> None:
    import importlib

    from twinloop.cli import _errors, _guard

    assert _guard.fail is _errors.fail  # the root guard prints every refusal
    for name in ("app", "cohort", "govern", "learn", "twin"):
        module = importlib.import_module(f"twinloop.cli.{name}")
        assert not hasattr(module, "_fail") and getattr(module, "fail", _errors.fail) is _errors.fail
