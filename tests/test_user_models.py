"""A user's own models: the model directory, ``twinloop models add/import/list/show/remove``,
and plugin models found through entry points of group ``twinloop.models``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import twinloop as tl
from twinloop.cli.app import app
from twinloop.models import registry
from twinloop.models.user import check_model_id, models_dir

runner = CliRunner()

DECAY = '''
"""First-order elimination, x' = -k x: a user's model."""

import jax.numpy as jnp

from twinloop.models import Inputs, Model, Observable, Parameter, State


def build() -> Model:
    return Model(
        id={model_id!r},
        version="1.0.0",
        name="First-order decay",
        description="x' = -k x",
        time_unit="h",
        states=(State("amount", "mg", nonnegative=True),),
        parameters=(Parameter("k", "1/h", 0.5, 0.01, 5.0), Parameter("a0", "mg", 10.0, 1.0, 100.0)),
        inputs=(),
        observables=(Observable("amount", "mg", lambda x, p: x[0]),),
        rhs=lambda t, x, u, p: jnp.stack([-p["k"] * x[0]]),
        initial_state=lambda p: jnp.stack([p["a0"] * 1.0]),
        standard_scenario=lambda p: (Inputs(), 10.0),
        references={references!r},
    )
'''


def decay_file(folder: Path, model_id: str = "decay", references: tuple[str, ...] = ("a textbook",)) -> Path:
    path = folder / f"{model_id.replace('.', '_')}_source.py"
    path.write_text(DECAY.format(model_id=model_id, references=references))
    return path


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("TWINLOOP_MODELS_DIR", str(folder))
    return folder


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


# --- where the directory is and what names it takes ------------------------------------------


def test_model_directory_is_env_then_project_then_user_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWINLOOP_MODELS_DIR", str(tmp_path / "env"))
    assert models_dir() == tmp_path / "env"
    monkeypatch.delenv("TWINLOOP_MODELS_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert models_dir() == tmp_path / "data" / "twinloop" / "models"
    (tmp_path / ".twinloop" / "models").mkdir(parents=True)
    assert models_dir() == tmp_path / ".twinloop" / "models"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models_dir() == tmp_path / "home" / ".local" / "share" / "twinloop" / "models"


@pytest.mark.parametrize("bad", ["", "Lorenz", "../x", "a/b", "a\\b", ".hidden", "a..b", "x" * 65, "a b", 3])
def test_model_ids_that_would_not_be_safe_file_names_are_refused(bad):
    with pytest.raises(tl.InputError, match="lowercase letters, digits"):
        check_model_id(bad)


def test_valid_ids_include_the_built_in_style():
    assert check_model_id("tgi-claret-2cmt") == "tgi-claret-2cmt"
    assert check_model_id("lorenz_63.v2") == "lorenz_63.v2"


def test_listing_ids_imports_no_model_and_builds_none(tmp_path):
    code = textwrap.dedent(
        """
        import json, sys
        from twinloop.models import registry
        ids = registry.available()
        loaded = [m for m in sys.modules if m.startswith("twinloop_user_model_") or m.startswith("twinloop.models.")
                  and m.rsplit(".", 1)[1] in ("t1d_uva_padova", "tgi_claret", "tgi_stein", "pk_one_compartment")]
        print(json.dumps({"ids": ids, "loaded": loaded, "cached": len(registry._CACHE)}))
        """
    )
    decay_file(tmp_path)
    env = {"TWINLOOP_MODELS_DIR": str(tmp_path / "models")}
    (tmp_path / "models").mkdir()
    (tmp_path / "decay_source.py").rename(tmp_path / "models" / "decay.py")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**_env(), **env})
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert "decay" in found["ids"] and "tgi-stein" in found["ids"]
    assert found["loaded"] == [] and found["cached"] == 0


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


# --- add, list, show, remove -----------------------------------------------------------------


def test_add_checks_stores_and_finds_the_model_again(tmp_path, model_dir):
    code, output = invoke("models", "add", str(decay_file(tmp_path)))
    assert code == 0, output
    assert "added model 'decay'" in output
    assert sorted(p.name for p in model_dir.iterdir()) == ["decay.py"]
    assert registry.source("decay").kind == "directory"
    model = tl.models.get("decay")
    times = np.linspace(0.0, 6.0, 7)
    traj = tl.simulate(model, np.array([[0.3, 20.0]]), tl.Inputs(), times=times, progress=False)
    np.testing.assert_allclose(traj.observables[0, :, 0], 20.0 * np.exp(-0.3 * times), rtol=1e-5)

    code, output = invoke("models", "list")
    assert code == 0 and "decay" in output and "directory" in output and "built-in" in output
    code, output = invoke("models", "show", "decay")
    assert code == 0 and f"source: directory ({model_dir / 'decay.py'})" in output.replace("\n", "")


def test_a_file_failing_its_check_is_refused_and_nothing_is_stored(tmp_path, model_dir):
    code, output = invoke("models", "add", str(decay_file(tmp_path, references=())))
    assert code == 2
    assert "fails check_model (units: AssertionError: no literature reference declared)" in output
    assert "--no-check" in output
    assert not model_dir.exists() or list(model_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def build(:\n", "failed to import: SyntaxError"),
        ("import not_a_module_anywhere_42\n", "failed to import: ModuleNotFoundError"),
        ("X = 1\n", "defines neither build\\(\\) nor MODEL"),
        ("def build():\n    return {'id': 'x'}\n", "gives a dict, not a twinloop Model"),
        ("def build():\n    raise RuntimeError('boom')\n", "building the model failed: RuntimeError: boom"),
    ],
)
def test_bad_files_get_one_clear_line_and_leave_nothing(tmp_path, model_dir, source, message):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    code, output = invoke("models", "add", str(bad))
    assert code == 2
    assert output.startswith(f"error: Model file '{bad}'")
    assert len(output.strip().splitlines()) == 1 or "Traceback" not in output
    import re

    assert re.search(message, output), output
    assert not model_dir.exists() or list(model_dir.iterdir()) == []
    assert not [m for m in sys.modules if m.startswith("twinloop_user_model_bad_")]


def test_add_refuses_a_taken_id_and_replaces_only_with_force(tmp_path, model_dir):
    source = decay_file(tmp_path)
    assert invoke("models", "add", str(source), "--no-check")[0] == 0
    code, output = invoke("models", "add", str(source), "--no-check")
    assert code == 2 and "already has a model 'decay' (decay.py); add --force" in output
    code, output = invoke("models", "add", str(source), "--no-check", "--force")
    assert code == 0, output
    code, output = invoke("models", "add", str(source), "--id", "other", "--no-check")
    assert code == 2 and "declares the model id 'decay', not 'other'" in output
    code, output = invoke("models", "add", str(decay_file(tmp_path, "tgi-stein")), "--no-check", "--force")
    assert code == 2 and "The model id 'tgi-stein' is taken by another model (built-in)" in output
    code, output = invoke("models", "add", str(source), "--id", "../evil", "--no-check")
    assert code == 2 and "--id is '../evil'" in output
    code, output = invoke("models", "add", str(tmp_path / "missing.py"))
    assert code == 2 and "is not a .py file" in output
    assert sorted(p.name for p in model_dir.iterdir()) == ["decay.py"]


def test_remove_deletes_directory_models_only(tmp_path, model_dir):
    assert invoke("models", "add", str(decay_file(tmp_path)), "--no-check")[0] == 0
    code, output = invoke("models", "remove", "tgi-stein")
    assert code == 2 and "is not in the model directory (it is built-in)" in output
    code, output = invoke("models", "remove", "decay")
    assert code == 0 and "removed model 'decay'" in output
    assert list(model_dir.iterdir()) == []
    code, output = invoke("models", "remove", "decay")
    assert code == 2 and "has no model 'decay'" in output
    with pytest.raises(tl.ModelError, match="Unknown model 'decay'"):
        tl.models.get("decay")


def test_a_file_declaring_another_id_than_its_name_is_refused_on_lookup(tmp_path, model_dir):
    model_dir.mkdir()
    decay_file(tmp_path, "elimination").rename(model_dir / "decay.py")
    with pytest.raises(tl.ModelError, match="declares the model id 'elimination', not 'decay'"):
        tl.models.get("decay")


def test_an_id_defined_twice_is_refused_with_both_places(tmp_path, model_dir):
    model_dir.mkdir()
    decay_file(tmp_path).rename(model_dir / "decay.py")
    (model_dir / "decay.xml").write_text("<sbml/>")
    with pytest.raises(tl.ModelError, match=r"'decay' is defined 2 times \(directory \(.*decay.py\); directory "):
        tl.models.get("decay")
    assert "decay" not in tl.models.available()
    code, output = invoke("models", "list")
    assert code == 0 and "conflict" in output


def test_a_changed_file_is_read_again(tmp_path, model_dir):
    assert invoke("models", "add", str(decay_file(tmp_path)), "--no-check")[0] == 0
    first = tl.models.get("decay")
    assert tl.models.get("decay") is first
    changed = (model_dir / "decay.py").read_text().replace('"1.0.0"', '"1.1.0"')
    (model_dir / "decay.py").write_text(changed + "\n")
    assert tl.models.get("decay").version == "1.1.0"


# --- SBML ------------------------------------------------------------------------------------

SBML = """<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">
  <model id="decay_sbml" name="First-order decay (SBML)" timeUnits="second" substanceUnits="mole"
         extentUnits="mole" volumeUnits="litre">
    <listOfUnitDefinitions>
      <unitDefinition id="per_second">
        <listOfUnits><unit kind="second" exponent="-1" scale="0" multiplier="1"/></listOfUnits>
      </unitDefinition>
    </listOfUnitDefinitions>
    <listOfCompartments>
      <compartment id="cell" spatialDimensions="3" size="1" units="litre" constant="true"/>
    </listOfCompartments>
    <listOfSpecies>
      <species id="S" compartment="cell" initialAmount="10" substanceUnits="mole"
               hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
    </listOfSpecies>
    <listOfParameters>
      <parameter id="k" value="0.5" units="per_second" constant="true"/>
    </listOfParameters>
    <listOfReactions>
      <reaction id="elimination" reversible="false">
        <listOfReactants>
          <speciesReference species="S" stoichiometry="1" constant="true"/>
        </listOfReactants>
        <kineticLaw>
          <math xmlns="http://www.w3.org/1998/Math/MathML">
            <apply><times/><ci>k</ci><ci>S</ci><ci>cell</ci></apply>
          </math>
        </kineticLaw>
      </reaction>
    </listOfReactions>
  </model>
</sbml>
"""


def test_import_without_an_sbml_importer_says_so_and_stores_nothing(tmp_path, model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "twinloop.models.sbml", None)  # as if the importer were not installed
    (tmp_path / "decay.xml").write_text(SBML)
    code, output = invoke("models", "import", str(tmp_path / "decay.xml"), "--id", "decay")
    assert code == 2 and "this installation has no SBML importer" in output
    assert not model_dir.exists() or list(model_dir.iterdir()) == []


def test_import_stores_the_sbml_file_as_is_and_reads_it_on_lookup(tmp_path, model_dir):
    (tmp_path / "decay.xml").write_text(SBML)
    code, output = invoke("models", "import", str(tmp_path / "decay.xml"), "--id", "decay", "--no-check")
    assert code == 0, output
    assert (model_dir / "decay.xml").read_text() == SBML
    assert registry.source("decay").kind == "directory"
    model = tl.models.get("decay")
    assert model.id == "decay"
    times = np.linspace(0.0, 4.0, 5)
    traj = tl.simulate(model, model.default_parameters, tl.Inputs(), times=times, save="all", progress=False)
    assert traj.states is not None
    np.testing.assert_allclose(traj.states[0, :, 0], 10.0 * np.exp(-0.5 * times), rtol=1e-5)


# --- entry points ----------------------------------------------------------------------------


def install_plugin(site: Path, names: dict[str, str], package: str = "byom_plugin") -> None:
    """A real installed distribution: a package and its ``*.dist-info`` with entry points."""
    (site / package).mkdir(parents=True)
    code = DECAY.format(model_id="plugin-decay", references=("a textbook",))
    (site / package / "__init__.py").write_text(code + "\nMODEL = build()\n")
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in names.items())
    (info / "entry_points.txt").write_text(f"[twinloop.models]\n{lines}")


def test_an_installed_plugin_model_is_found_by_its_entry_point(tmp_path, model_dir, monkeypatch):
    install_plugin(tmp_path / "site", {"plugin-decay": "byom_plugin:build"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert registry.source("plugin-decay").describe() == "entry point (byom-plugin 0.1: byom_plugin:build)"
    model = tl.models.get("plugin-decay")
    assert model.id == "plugin-decay" and model.parameter_names == ("k", "a0")
    code, output = invoke("models", "list")
    assert code == 0 and "plugin-decay" in output and "entry point" in output
    code, output = invoke("models", "remove", "plugin-decay")
    assert code == 2 and "(it is entry point (byom-plugin 0.1" in output.replace("\n", "")


def test_a_plugin_may_give_a_model_object_and_must_not_take_a_used_id(tmp_path, model_dir, monkeypatch):
    install_plugin(
        tmp_path / "site",
        {"plugin-decay": "byom_plugin:MODEL", "tgi-stein": "byom_plugin:build", "wrong-id": "byom_plugin:MODEL"},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert tl.models.get("plugin-decay").name == "First-order decay"
    with pytest.raises(tl.ModelError, match=r"'tgi-stein' is defined 2 times \(built-in; entry point \(byom-plugin"):
        tl.models.get("tgi-stein")
    with pytest.raises(tl.ModelError, match="declares the model id 'plugin-decay', not 'wrong-id'"):
        tl.models.get("wrong-id")
    code, output = invoke("models", "add", str(decay_file(tmp_path, "plugin-decay")), "--no-check")
    assert code == 2 and "is taken by another model (entry point" in output.replace("\n", "")
