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
    monkeypatch.setattr(report, "require_product", lambda path: None)
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
