"""Closed-loop synthetic data products: the spec's control section, the planner the products
layer needs for it, the engine's replay of the loop, and a tiny closed-loop product end
to end (rescue carbohydrate in its doses, no patient at 0 mg/dL, byte-identical rerun,
the command line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import twinloop as tl
from twinloop.cli.app import app
from twinloop.control import Patients, by_name, closed_loop, delivered_inputs, generate_product
from twinloop.control.product import arm_loops
from twinloop.errors import InputError
from twinloop.products.dataset import Product, file_hash, generate
from twinloop.products.spec import ProductSpec

MEALS = [[420, 50], [720, 70], [1140, 80]]
CONTROL = {"controller": "basal-bolus", "rescue": {"threshold_mg_dl": 90, "grams": 15, "refractory_min": 30}}
SPEC: dict[str, Any] = {
    "name": "t1d-closed-loop-test",
    "model": "t1d-uva-padova",
    "population": "default",
    "condition": {"group": ["child"]},
    "n": 4,
    "seed": 5,
    "duration": 1440,
    "resolution": 5,
    "treatment": {"kind": "basal_bolus", "meals": MEALS},
    "observations": [{"name": "cgm", "observable": "subcutaneous_glucose", "schedule": {"every": 5},
                      "error": {"kind": "cgm", "sensor": "GuardianRT"}},
                     {"name": "bg", "observable": "plasma_glucose", "schedule": {"every": 5}}],
    "outcomes": {"kind": "glycaemic", "observable": "plasma_glucose"},
    "control": CONTROL,
}  # fmt: skip


def spec(**changes: Any) -> ProductSpec:
    return ProductSpec.from_dict({**SPEC, **changes})


def loops(**changes: Any) -> Any:
    parsed = spec(**changes)
    return arm_loops(parsed, tl.models.get(parsed.model_id))


# --- the control section --------------------------------------------------------------
def test_control_section_is_hashed_with_the_spec_and_may_differ_by_arm() -> None:
    assert spec().control == {"all": CONTROL}
    assert spec().content_hash() != spec(control={**CONTROL, "noise": False}).content_hash()
    arms = {"A": {"kind": "basal_bolus", "meals": MEALS}, "B": {"kind": "basal_bolus", "meals": MEALS}}
    base = {k: v for k, v in SPEC.items() if k != "treatment"}
    per_arm = ProductSpec.from_dict({**base, "arms": arms, "control": {"A": {"controller": "pid"}, "B": None}})
    assert per_arm.control == {"A": {"controller": "pid"}}  # B stays open-loop
    with pytest.raises(InputError, match=r"not \['B'\].*null keeps an arm open-loop"):
        ProductSpec.from_dict({**base, "arms": arms, "control": {"A": {"controller": "pid"}}})
    with pytest.raises(InputError, match="control must be a mapping"):
        spec(control="basal-bolus")


def test_control_settings_are_checked_by_name() -> None:
    loop = loops(control={"controller": {"name": "pid", "P": 0.002}, "rescue": None, "noise": False})["all"]
    assert loop.controller.name == "pid" and loop.controller.settings["P"] == 0.002
    assert loop.scenario.rescue is None and loop.scenario.minutes == 1440 and len(loop.scenario.meals) == 3
    mpc = loops(control={"controller": {"name": "mpc", "zone": [80, 140]}})["all"].controller
    assert mpc.name == "mpc" and by_name("bb").name == "basal-bolus"
    with pytest.raises(InputError, match=r"Unknown controller 'bang-bang'.*basal-bolus, bb, pid, mpc"):
        loops(control={"controller": "bang-bang"})
    with pytest.raises(InputError, match=r"'pid' has no settings \['gain'\]"):
        loops(control={"controller": {"name": "pid", "gain": 1}})
    with pytest.raises(InputError, match=r"unknown keys \['sensr'\]"):
        loops(control={"sensr": "Dexcom"})
    with pytest.raises(InputError, match="Unknown pump 'Omnipod'"):
        loops(control={"pump": "Omnipod"})
    with pytest.raises(InputError, match="whole number of control periods"):
        loops(duration=1442)
    assert by_name("basal-bolus") is by_name("basal-bolus", {})  # one compiled loop per controller


def test_the_closed_loop_example_is_accepted() -> None:
    example = ProductSpec.from_yaml(Path(__file__).parents[1] / "examples" / "t1d_closed_loop.yaml")
    loop = arm_loops(example, tl.models.get(example.model_id))["all"]
    assert loop.scenario.days == 7 and loop.scenario.carb_count_error_cv == 0.1 and loop.scenario.rescue is not None


def test_a_spec_with_a_control_section_needs_a_planner(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"generate_product\(spec, out\) or `twinloop cohort generate`"):
        generate(spec(), tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()


# --- the loop and its replay ----------------------------------------------------------
def test_the_engine_replays_the_closed_loop() -> None:
    model = tl.models.get("t1d-uva-padova")
    loop = loops()["all"]  # the product's loop, compiled once for both tests
    patients = Patients.from_population(model, 8, seed=2)
    result = closed_loop(model, patients, loop.controller, loop.scenario, seed=1, chunk_size=8)
    assert result.bolus.max() > 0 and result.rescue_g.sum() > 0
    plan = delivered_inputs(model, result.insulin, result.carbs)
    grid = np.arange(0.0, 1441.0, 5.0)
    replay = tl.simulate(model, patients.params, plan, times=grid, progress=False, chunk_size=4)
    assert np.abs(replay["plasma_glucose"][:, :-1] - result.bg[:, ::5]).max() < 0.01
    assert np.abs(replay["subcutaneous_glucose"][:, :-1] - result.sg[:, ::5]).max() < 0.01


# --- a closed-loop product ------------------------------------------------------------
@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Product:
    out = tmp_path_factory.mktemp("closed") / "p"
    generate_product(spec(), out, progress=False)
    return Product.open(out)


def test_closed_loop_product_rescues_its_patients(product: Product) -> None:
    assert product.manifest["spec"]["control"] == CONTROL
    assert "closed-loop arm a [seed, k, 4, a]" in product.manifest["seeds"]["derivation"]
    doses = product.table("doses")
    carbs = doses[doses["input"] == "carbs"]
    eaten = (carbs["amount"] * carbs["duration"]).groupby(carbs["subject_id"]).sum()
    assert len(eaten) == 4 and (eaten >= 200 - 1e-9).all() and (eaten > 200 + 1).any()  # meals + rescue
    meal_minutes = {420 + m for m in range(10)} | {720 + m for m in range(14)} | {1140 + m for m in range(16)}
    minutes = (carbs["time"] - carbs["time"].dt.normalize()).dt.total_seconds() / 60
    assert not set(minutes.round().astype(int)) <= meal_minutes  # rescue carbohydrate outside the meals
    insulin = doses[doses["input"] == "insulin"]
    assert insulin.groupby("subject_id").size().min() >= 4  # basal and several boluses per patient
    observed = product.table("observations")
    plasma = observed[observed["source"] == "synthetic:bg"]["value"]
    assert len(plasma) == 4 * 289 and plasma.min() > 40
    assert not product.table("patients")["simulation_failed"].any()


def test_closed_loop_product_reruns_to_the_same_bytes(product: Product, tmp_path: Path) -> None:
    again = tmp_path / "again"
    result = runner_invoke(["cohort", "generate", str(write_spec(tmp_path)), "--out", str(again)])
    assert result.exit_code == 0, result.output
    for name, info in product.manifest["files"].items():
        assert file_hash(again / name) == info["sha256"], name


def write_spec(folder: Path) -> Path:
    import yaml

    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def runner_invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def test_a_patients_back_to_back_doses_at_one_rate_are_one_row() -> None:
    from twinloop.products.treatments import dose_table

    model = tl.models.get("t1d-uva-padova")
    plan = delivered_inputs(model, np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 3.0, 1.0, 1.0]]), np.zeros((2, 4)))
    doses = dose_table(model, plan, ["a", "b"])
    rows = [(r.subject_id, r.time, r.amount, r.duration) for r in doses.itertuples()]
    assert rows == [("a", 0.0, 1.0, 3.0), ("b", 0.0, 1.0, 1.0), ("b", 1.0, 3.0, 1.0), ("b", 2.0, 1.0, 2.0)]
