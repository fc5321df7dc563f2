"""Start-up: ``import twinloop`` and the help pages of the ``twinloop`` command import no
heavy library, the lazy public names still resolve, and JAX is configured (float64, the
persistent compilation cache) before any of it runs.

Each start-up check runs a fresh interpreter; no test asserts on time
(``benchmarks/bench_startup.py`` measures it)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import twinloop as tl

SRC = Path(tl.__file__).parent
HEAVY = (
    "jax", "jaxlib", "numpy", "scipy", "pandas", "pyarrow", "numpyro", "diffrax", "equinox", "optax", "flowjax",
    "scoringrules", "numba", "plotly", "matplotlib", "statsmodels", "sqlalchemy", "fhir.resources", "sklearn",
    "xarray", "arviz", "SALib", "pint", "duckdb", "dask", "distributed", "tornado",
)  # fmt: skip
JAX_FAMILY = ("jax", "jaxlib", "diffrax", "equinox", "numpyro", "optax", "flowjax")
CLI = "import sys; from twinloop.cli.app import main; sys.argv[0] = 'twinloop'; main()"
# writes the modules loaded, whichever way the child ends (``--help`` ends in SystemExit)
RECORD = "import atexit, json, sys; atexit.register(lambda: open({path!r}, 'w').write(json.dumps(sorted(sys.modules))))"


def run_child(tmp_path: Path, code: str, *args: str, **env: str) -> tuple[set[str], str]:
    """Run ``python -c code args`` in a fresh interpreter; the modules it loaded, and its output."""
    record = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", RECORD.format(path=str(record)) + "\n" + code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120", **env},
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(record.read_text())), result.stdout


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (None, None),
        (["--help"], "twinloop: hybrid medical digital twins."),
        (["twin", "--help"], "Patient twins: create, synchronize, forecast, compare, show, lineage."),
        (["twin", "create", "--help"], "Identify a twin on a patient's data and store it (version 1)."),
        (["cohort", "generate", "--help"], "--max-chunks"),
        (["models", "--help"], "List, describe and check the models; add, import and remove your own."),
    ],
)
def test_import_and_help_load_no_heavy_library(tmp_path, args, shown):
    if args is None:
        modules, _ = run_child(tmp_path, "import twinloop")
    else:
        modules, output = run_child(tmp_path, CLI, *args)
        assert shown in output
    assert heavy(modules) == []


def test_public_names_resolve_and_dir_lists_them():
    from twinloop.simulate.engine import SolverSettings, simulate
    from twinloop.simulate.trajectories import Trajectories
    from twinloop.twin.patient import PatientTwin

    assert tl.PatientTwin is PatientTwin and tl.simulate is simulate
    assert tl.SolverSettings is SolverSettings and tl.Trajectories is Trajectories
    assert tl.models.get("pk-one-compartment").id == "pk-one-compartment"
    assert issubclass(tl.DataError, tl.TwinloopError) and tl.__version__ == "0.1.0"
    errors = {"TwinloopError", "ModelError", "InputError", "DataError", "SimulationError", "CalibrationError"}
    names = {"PatientTwin", "simulate", "SolverSettings", "Trajectories", "Inputs", "models", "control", "trials"}
    names |= {"scale"}
    expected = {*names, "__version__", *errors}
    assert set(dir(tl)) == set(tl.__all__) == expected
    with pytest.raises(AttributeError, match="module 'twinloop' has no attribute 'PatientTwins'"):
        _ = tl.PatientTwins


@pytest.mark.parametrize(
    "package",
    ["twinloop.models", "twinloop.simulate", "twinloop.calibrate", "twinloop.cohort", "twinloop.connect",
     "twinloop.learn", "twinloop.store", "twinloop.twin", "twinloop.scale"],
)  # fmt: skip
def test_every_declared_name_of_a_package_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__ and dir(module) == module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        _ = module.no_such_name


def test_functions_named_like_a_submodule_stay_functions_once_it_loads(tmp_path):
    """``twinloop.simulate`` is a function and a subpackage, ``twinloop.connect.ingest`` a
    function and a module; loading the (sub)module first must not hide the function."""
    code = """
import twinloop as tl
import twinloop.connect
import twinloop.simulate.trajectories
from twinloop.simulate import Trajectories
import twinloop.connect.ingest
from twinloop.connect import ingest
print(tl.simulate.__module__, tl.simulate.__name__, ingest.__module__, ingest.__name__)
print(twinloop.connect.ingest is ingest)
"""
    _, output = run_child(tmp_path, code)
    assert output.split() == ["twinloop.simulate.engine", "simulate", "twinloop.connect.ingest", "ingest", "True"]


def _imports_jax_at_module_level(path: Path) -> bool:
    for node in ast.parse(path.read_text()).body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if any(n.split(".")[0] in JAX_FAMILY for n in names):
            return True
    return False


def test_every_module_that_imports_jax_sits_in_a_package_that_configures_it_first():
    """Python runs a package's ``__init__`` before its modules: one calling ``ensure_jax()``
    puts float64 and the compilation cache in place before those modules import JAX."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name in ("_config.py", "__init__.py") or not _imports_jax_at_module_level(path):
            continue
        inits = [p / "__init__.py" for p in path.parents if p != SRC and SRC in p.parents]
        if not any("\nensure_jax()" in init.read_text() for init in inits):
            offenders.append(str(path.relative_to(SRC)))
    assert offenders == []


def test_jax_runs_in_float64_and_fills_the_cache_directory_in_a_fresh_process(tmp_path):
    """A one-compartment IV bolus, C(t) = D/V exp(-CL/V t), solved at rtol 1e-10: float32
    could not come within 1e-8 of the closed form."""
    code = """
import sys
import numpy as np
import twinloop as tl
assert "jax" not in sys.modules
pk = tl.models.get("pk-one-compartment")
times = np.linspace(0.0, 24.0, 13)
settings = tl.SolverSettings(rtol=1e-10, atol=1e-13)
traj = tl.simulate(pk, [5.0, 50.0, 1.0], tl.Inputs.bolus("dose_iv", [(0.0, 100.0)]), times=times, settings=settings,
                   progress=False)
import jax
expected = 100.0 / 50.0 * np.exp(-5.0 / 50.0 * times)
print(jax.config.jax_enable_x64, traj.observables.dtype, np.max(np.abs(traj["concentration"][0] / expected - 1)))
print(jax.config.jax_compilation_cache_dir)
"""
    _, output = run_child(tmp_path, code, TWINLOOP_CACHE_DIR=str(tmp_path / "cache"))
    x64, dtype, error, cache = output.split()
    assert (x64, dtype) == ("True", "float64") and float(error) < 1e-8
    assert Path(cache) == tmp_path / "cache" / "jax"
    assert any(Path(cache).iterdir()), "nothing was written to the persistent compilation cache"


def test_ensure_jax_is_idempotent():
    import jax

    from twinloop._config import ensure_jax

    ensure_jax()
    ensure_jax()
    assert jax.config.jax_enable_x64 and np.asarray(jax.numpy.ones(2)).dtype == np.float64
