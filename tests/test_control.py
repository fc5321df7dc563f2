"""The closed loop: pumps, controllers, rescue carbohydrate, user controllers, chunking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twinloop.control import Action, Controller, Patients, Pump, RescueCarbs, Scenario, basal_bolus, closed_loop, pid
from twinloop.control.pump import pumps
from twinloop.errors import InputError
from twinloop.models.registry import get_or_error

NAMES = ["adolescent#001", "adult#001", "child#001"]
QUIET = Scenario(noise=False, rescue=None)


@pytest.fixture(scope="module")
def model():
    return get_or_error("t1d-uva-padova")


@pytest.fixture(scope="module")
def patients(model):
    return Patients.published(model, NAMES)


class _Run:
    """A result with the controller object that made it (reusing it reuses the compiled loop)."""

    def __init__(self, result, controller):
        self.__dict__.update(result.__dict__, controller_object=controller)


@pytest.fixture(scope="module")
def bb_quiet(model, patients):
    controller = basal_bolus()
    return _Run(closed_loop(model, patients, controller, QUIET), controller)


@pytest.fixture(scope="module")
def pid_runs(model, patients):
    """PID on three patients, without and with rescue carbohydrate (one compile each)."""
    controller = pid()
    bare = closed_loop(model, patients, controller, QUIET)
    rescued = closed_loop(model, patients, controller, Scenario(noise=False))
    return bare, rescued


@pytest.mark.parametrize("name", ["Insulet", "Cozmo"])
def test_the_pump_rounds_and_clips_as_simglucose(name):
    from simglucose.actuator.pump import InsulinPump

    theirs = InsulinPump.withName(name)
    ours = Pump.named(name)
    edges = [-1.0, 0.0, 1e-6, 0.013, 0.7, 29.99, 31.0, 80.0]
    rates = np.concatenate([edges, np.random.default_rng(0).uniform(0, 2, 50)])
    assert np.allclose(np.asarray(ours.basal(rates)), [theirs.basal(r) for r in rates], rtol=1e-14, atol=0)
    assert np.allclose(np.asarray(ours.bolus(rates)), [theirs.bolus(r) for r in rates], rtol=1e-14, atol=0)
    assert float(ours.bolus(1e3)) == ours.max_bolus and float(ours.basal(-5.0)) == 0.0


def test_an_unknown_pump_is_refused_with_the_known_ones():
    with pytest.raises(InputError, match="Insulet"):
        Pump.named("Omnipod 9")
    assert set(pumps()) == {"Insulet", "Cozmo"}


def _observation(cgm, meal=0.0, cr=10.0, cf=40.0, basal=0.02):
    import jax.numpy as jnp

    from twinloop.control import Observation

    f = jnp.float64
    return Observation(f(cgm), f(meal), f(0.0), f(0.0), f(basal), f(cr), f(cf), f(5.0))


def test_the_pid_controller_follows_simglucose_reading_by_reading():
    from simglucose.controller.pid_ctrller import PIDController
    from simglucose.simulation.env import Observation as SimObservation

    theirs = PIDController(P=0.001, I=0.00001, D=0.001, target=140)
    ours = pid()
    readings = [180.0, 175.5, 160.0, 120.0, 90.0, 85.0, 140.0, 250.0]
    state = ours.init(_observation(readings[0]))
    for cgm in readings:
        state, action = ours.policy(state, _observation(cgm))
        expected = theirs.policy(SimObservation(CGM=cgm), 0, False, sample_time=5)
        assert float(action.basal_U_per_min) == pytest.approx(expected.basal, rel=1e-12)
        assert float(action.bolus_U) == 0.0


@pytest.mark.parametrize(("cgm", "meal"), [(120.0, 50.0), (200.0, 70.0), (200.0, 0.0), (151.0, 10.0)])
def test_the_basal_bolus_controller_doses_as_simglucose(cgm, meal):
    from simglucose.controller.basal_bolus_ctrller import BBController

    theirs = BBController()._bb_policy("adult#001", meal / 5.0, cgm, 5)
    quest = pd.read_csv(
        __import__("importlib.resources").resources.files("twinloop.models") / "data" / "uva_padova_therapy.csv"
    )
    row = quest[quest.Name == "adult#001"].iloc[0]
    basal = theirs.basal
    _, action = basal_bolus().policy((), _observation(cgm, meal, cr=row.CR, cf=row.CF, basal=basal))
    assert float(action.basal_U_per_min) == pytest.approx(theirs.basal)
    assert float(action.bolus_U) / 5.0 == pytest.approx(theirs.bolus, rel=1e-12)


def test_rescue_carbohydrate_lifts_the_patients_the_pid_controller_sends_low(pid_runs):
    bare, rescued = pid_runs
    child = 2
    assert bare.bg[child].min() < 40  # simglucose's gains overdose this child (simglucose issue #85)
    assert rescued.bg[child].min() > bare.bg[child].min() + 10  # 15 g an hour does not undo these gains
    taken = np.flatnonzero(rescued.rescue_g[child])
    assert taken.size >= 1 and np.all(rescued.rescue_g[child][taken] == 15.0)
    assert np.all(np.diff(rescued.period_starts[taken]) >= 60)  # refractory time
    low = rescued.cgm[child][rescued.period_starts[taken].astype(int)]
    assert np.all(low < 70)  # taken only on a low reading
    assert np.all(rescued.rescue_g[0] == 0) or rescued.cgm[0].min() < 70
    # eaten like a meal, at the eating rate, and not announced to the controller (no bolus: PID gives none)
    assert rescued.carbs[child].sum() == pytest.approx(3 * (50 + 70 + 80) / 3 + taken.size * 15.0, abs=1e-9)


def test_user_controllers_are_jax_functions_with_their_own_state(model, patients):
    """A counter in the controller's state gives 1 U at the third period: the pump delivers
    it over that period's five minutes on top of the basal."""

    def policy(count, obs):
        import jax.numpy as jnp

        bolus = jnp.where(count == 2, 1.0, 0.0)
        return count + 1, Action(obs.basal_U_per_min, bolus)

    import jax.numpy as jnp

    user = Controller.from_function("third-period bolus", policy, jnp.asarray(0))
    run = closed_loop(model, patients[:2], user, QUIET)
    basal = np.asarray(Pump.named("Insulet").basal(patients.basal[:2]))
    extra = run.insulin - basal[:, None]
    assert np.allclose(extra[:, 10:15], 0.2) and np.allclose(np.delete(extra, np.s_[10:15], axis=1), 0.0)
    assert np.allclose(run.bolus[:, 2], 1.0) and run.bolus.sum() == pytest.approx(2.0)


def test_the_basal_bolus_bolus_comes_one_period_after_the_meal_as_in_simglucose(model, patients, bb_quiet):
    run = bb_quiet
    meal_period = 420 // 5
    assert np.all(run.bolus[:, meal_period] == 0) and np.all(run.bolus[:, meal_period + 1] > 0)
    assert np.allclose(run.bolus[:, meal_period + 1], 50.0 / patients.carb_ratio, rtol=0.5)
    assert not run.failed.any()
    fast = closed_loop(model, patients, bb_quiet.controller_object, QUIET, accurate=False)
    assert np.abs(fast.bg - run.bg).max() < 0.05  # the fast path: two RK4 steps per minute


def test_chunks_give_the_same_patients(model, patients, bb_quiet):
    split = closed_loop(model, patients, bb_quiet.controller_object, QUIET, chunk_size=2)  # 2 + 1 padded
    assert np.allclose(split.bg, bb_quiet.bg, rtol=1e-12, atol=1e-9)
    assert np.array_equal(split.bolus != 0, bb_quiet.bolus != 0)


def test_the_seed_draws_meals_announcements_and_sensor_errors(model, patients):
    noisy = Scenario(noise=True, meal_time_sd_min=20.0, carb_count_error_cv=0.2)
    controller = basal_bolus()
    first = closed_loop(model, patients, controller, noisy, seed=3)
    again = closed_loop(model, patients, controller, noisy, seed=3)
    other = closed_loop(model, patients, controller, noisy, seed=4)
    assert np.array_equal(first.cgm, again.cgm) and np.array_equal(first.bg, again.bg)
    assert not np.array_equal(first.cgm, other.cgm) and not np.array_equal(first.carbs, other.carbs)
    assert not np.allclose(first.cgm, np.clip(first.sg, 39, 600))  # the sensor errs
    lineage = first.lineage()
    assert lineage["seed"] == 3 and lineage["controller"]["name"] == "basal-bolus"
    assert lineage["model"]["content_hash"] == model.content_hash()


def test_the_noise_free_sensor_reads_subcutaneous_glucose_every_five_minutes(pid_runs):
    bare, _ = pid_runs
    t = np.arange(0, bare.minutes.size, 5)
    assert np.allclose(bare.cgm[:, t], np.clip(bare.sg[:, t], 39, 600))
    assert np.array_equal(bare.cgm[:, t + 1], bare.cgm[:, t])  # held between samples


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"days": 0}, "days"),
        ({"meals": [(1500, 50)]}, "minute of the day"),
        ({"meals": "breakfast"}, "meals"),
        ({"sensor": "Libre"}, "Libre"),
        ({"pump": "Tandem"}, "Tandem"),
        ({"carb_count_error_cv": -0.1}, "carb_count_error_cv"),
        ({"period_min": 7, "days": 1}, None),
    ],
)
def test_bad_scenarios_are_refused_by_field(model, patients, kwargs, match):
    if match is None:  # a period that does not divide the run is refused when the run starts
        with pytest.raises(InputError, match="whole number of control periods"):
            closed_loop(model, patients, basal_bolus(), Scenario(**kwargs))
        return
    with pytest.raises(InputError, match=match):
        Scenario(**kwargs)


def test_scenario_specs_are_read_key_by_key():
    scenario = Scenario.from_dict({"days": 2, "meals": [[420, 50]], "rescue": {"grams": 20}})
    assert scenario.rescue == RescueCarbs(grams=20) and scenario.minutes == 2880
    assert Scenario.from_dict(scenario.to_dict()) == scenario
    with pytest.raises(InputError, match="Unknown scenario keys"):
        Scenario.from_dict({"dayz": 2})
    with pytest.raises(InputError, match="Unknown rescue keys"):
        Scenario.from_dict({"rescue": {"gram": 20}})


def test_a_model_without_a_control_interface_is_refused():
    from twinloop.control.patients import control_interface

    with pytest.raises(InputError, match="declares no control interface"):
        control_interface(get_or_error("pk-one-compartment"))


def test_a_delayed_sensor_reads_subcutaneous_glucose_from_minutes_before(model, patients):
    basal_only = Controller.from_function("basal only", lambda s, obs: (s, Action(obs.basal_U_per_min, 0.0)))
    run = closed_loop(model, patients[:1], basal_only, Scenario(noise=False, rescue=None, sensor_delay_min=10),
                      accurate=False)  # fmt: skip
    t = np.arange(10, run.minutes.size, 5)
    assert np.allclose(run.cgm[0, t], np.clip(run.sg[0, t - 10], 39, 600))
    assert not np.allclose(run.cgm[0, t], run.sg[0, t])
