"""Gymnasium environments: spaces, the checker, registration, autoreset, seeding,
termination, action bounds, and the tie to the validated closed loop.

One short scenario (three hours, two meals varying in time and size) and one set of
three published patients serve every test, so each environment compiles once."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import twinloop as tl
from twinloop.control import Patients, Scenario, basal_bolus, closed_loop
from twinloop.control.loop import exogenous
from twinloop.envs import ENV_ID, EnvSettings, GlucoseEnv, GlucoseVectorEnv, controllable_model, risk_index

SHORT = Scenario(days=0.125, meals=((30.0, 40.0), (100.0, 60.0)), meal_time_sd_min=10.0, meal_size_cv=0.2,
                 carb_count_error_cv=0.1)  # fmt: skip
STEPS = 36  # 180 min of 5-min periods
NAMES = ["adolescent#001", "adult#001", "child#001"]
H = 12


@pytest.fixture(scope="module")
def venv() -> GlucoseVectorEnv:
    """Three published patients; episodes end at level-2 hypoglycaemia (54 mg/dL), which an
    insulin overdose reaches within the three hours."""
    return GlucoseVectorEnv(patients=NAMES, scenario=SHORT, terminate_below_mg_dl=54.0)


@pytest.fixture(scope="module")
def single() -> GlucoseEnv:
    return GlucoseEnv(patient="adult#001", scenario=SHORT)


def basal_bolus_actions(patients: Patients, info: dict[str, np.ndarray]) -> np.ndarray:
    """simglucose's basal-bolus controller in Python (target 140, corrections above 150)."""
    cgm, meal = info["cgm_mg_dl"], info["meal_g"]
    correction = np.where(cgm > 150.0, (cgm - 140.0) / patients.correction_factor, 0.0)
    bolus = np.where(meal > 0, meal / patients.carb_ratio + correction, 0.0)
    return np.stack([patients.basal * 60.0, bolus], axis=1)


def run(env: GlucoseVectorEnv, seed: int, policy, steps: int = STEPS) -> dict[str, np.ndarray]:
    """One episode from ``reset(seed)`` under ``policy(info) -> actions``; the stacked outputs."""
    obs, info = env.reset(seed=seed)
    out: dict[str, list[np.ndarray]] = {"obs": [obs], "reward": [], "terminated": [], "truncated": [], "bg": [],
                                        "insulin": [], "meal": [info["meal_g"]]}  # fmt: skip
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(policy(info))
        for key, value in (("obs", obs), ("reward", reward), ("terminated", terminated), ("truncated", truncated),
                           ("bg", info["plasma_glucose_mg_dl"]), ("insulin", info["insulin_U_per_min"]),
                           ("meal", info["meal_g"])):  # fmt: skip
            out[key].append(value)
    return {k: np.concatenate(v, axis=1) if k in ("bg", "insulin") else np.stack(v) for k, v in out.items()}


# --- spaces, observation, reward ----------------------------------------------
def test_spaces_shapes_and_dtypes(venv: GlucoseVectorEnv) -> None:
    single_obs, single_act = venv.single_observation_space, venv.single_action_space
    assert single_obs.shape == (H + 4,) and single_obs.dtype == np.float32
    assert single_act.shape == (2,) and single_act.dtype == np.float32
    assert np.array_equal(single_act.low, [0, 0]) and np.array_equal(single_act.high, [10, 50])
    assert single_obs.low[0] == 39 and single_obs.high[0] == 600  # GuardianRT reads 39..600 mg/dL
    assert venv.observation_space.shape == (3, H + 4) and venv.action_space.shape == (3, 2)
    assert venv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP and venv.num_envs == 3
    obs, info = venv.reset(seed=0)
    assert obs.dtype == np.float32 and obs in venv.observation_space
    assert np.array_equal(obs[:, :H], np.repeat(info["cgm_mg_dl"].astype(np.float32)[:, None], H, axis=1))
    assert np.array_equal(obs[:, H + 1 :], np.tile(np.float32([0, 0, 1]), (3, 1)))  # no meal yet, midnight
    obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
    assert obs.dtype == np.float32 and obs in venv.observation_space
    assert reward.shape == (3,) and reward.dtype == np.float64
    assert terminated.dtype == truncated.dtype == np.bool_ and not (terminated.any() or truncated.any())
    assert info["plasma_glucose_mg_dl"].shape == info["insulin_U_per_min"].shape == (3, 5)
    assert info["carbs_g_per_min"].shape == (3, 5) and info["rescue_g"].shape == (3,)
    assert np.array_equal(obs[:, H - 1], info["cgm_mg_dl"].astype(np.float32))  # the newest CGM last
    angle = 2 * math.pi * 5 / 1440
    assert np.allclose(obs[:, H + 2 :], [math.sin(angle), math.cos(angle)], atol=1e-7)


def test_reward_is_minus_kovatchevs_risk_of_the_periods_cgm(venv: GlucoseVectorEnv) -> None:
    # Kovatchev's scale is symmetric about 112.5 mg/dL and maps 20 and 600 mg/dL to -/+ sqrt(10)
    assert float(risk_index(112.5)) == pytest.approx(0.0, abs=1e-3)
    assert float(risk_index(20.0)) == pytest.approx(100.0, rel=0.01)
    assert float(risk_index(600.0)) == pytest.approx(100.0, rel=0.01)
    venv.reset(seed=1)
    _, reward, _, _, info = venv.step(np.zeros((3, 2)))
    assert np.allclose(reward, -np.asarray(risk_index(info["cgm_mg_dl"])), rtol=1e-12) and np.all(reward < 0)


# --- the tie to the validated closed loop ---------------------------------------
def test_a_python_basal_bolus_policy_reproduces_the_closed_loop(venv: GlucoseVectorEnv) -> None:
    patients = venv.patients
    episode = run(venv, 7, lambda info: basal_bolus_actions(patients, info))
    reference = closed_loop(venv.model, patients, basal_bolus(), SHORT, seed=7, accurate=False)
    assert episode["bg"].shape == reference.bg.shape == (3, 180)
    assert np.allclose(episode["bg"], reference.bg, rtol=1e-9, atol=0)
    assert np.allclose(episode["insulin"], reference.insulin, rtol=1e-9, atol=0)
    assert reference.bolus.max() > 1.0 and not episode["terminated"].any()
    assert episode["truncated"][-1].all() and not episode["truncated"][:-1].any()
    assert np.allclose(episode["obs"][:-1, :, H - 1], reference.cgm_seen.T, rtol=1e-6)  # what BB saw


def test_a_python_controller_object_drives_one_patient(single: GlucoseEnv) -> None:
    class Proportional:
        """A Python controller: basal plus a proportional term, meal boluses from the observation."""

        def __init__(self, patients: Patients) -> None:
            self.basal, self.ratio = float(patients.basal[0] * 60), float(patients.carb_ratio[0])

        def act(self, obs: np.ndarray) -> np.ndarray:
            basal = max(self.basal + 0.02 * (float(obs[H - 1]) - 140.0), 0.0)
            return np.array([basal, float(obs[H + 1]) / self.ratio], dtype=np.float32)

    controller = Proportional(single.patients)
    obs, _ = single.reset(seed=2)
    bg, steps, truncated, terminated = [], 0, False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = single.step(controller.act(obs))
        assert obs in single.observation_space and isinstance(reward, float)
        bg.append(info["plasma_glucose_mg_dl"])
        steps += 1
    assert steps == STEPS and truncated and not terminated
    assert np.min(bg) > 70.0 and np.max(bg) < 250.0


# --- Gymnasium's checker and registry -----------------------------------------
@pytest.mark.filterwarnings("ignore:.*Box (action|observation) space:UserWarning")
@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version:UserWarning")
def test_the_single_patient_env_passes_gymnasiums_checker(single: GlucoseEnv) -> None:
    check_env(single)
    made = gymnasium.make(ENV_ID, patient="adult#001", scenario=SHORT)
    assert isinstance(made.unwrapped, GlucoseEnv) and made.spec is not None and made.spec.id == ENV_ID
    check_env(made)
    first, _ = made.reset(seed=4)
    assert np.array_equal(first, single.reset(seed=4)[0])


def test_make_vec_builds_the_vector_env_from_the_registry(venv: GlucoseVectorEnv) -> None:
    envs = gymnasium.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", patients=NAMES,
                              scenario=SHORT, terminate_below_mg_dl=54.0)  # fmt: skip
    assert isinstance(envs, GlucoseVectorEnv) and envs.num_envs == 3 and envs.patients.ids == tuple(NAMES)
    actions = np.tile(np.float32([1.0, 2.0]), (3, 1))
    a, b = envs.reset(seed=5)[0], venv.reset(seed=5)[0]
    assert np.array_equal(a, b) and np.array_equal(envs.step(actions)[0], venv.step(actions)[0])
    assert gymnasium.make_vec("twinloop.envs:" + ENV_ID, num_envs=2).num_envs == 2  # nothing compiles yet


# --- autoreset, seeding, termination, bounds ------------------------------------
def test_ended_patients_restart_on_the_next_step_with_new_meals(venv: GlucoseVectorEnv) -> None:
    patients = venv.patients
    first = run(venv, 3, lambda info: basal_bolus_actions(patients, info))
    assert first["truncated"][-1].all()
    obs, reward, terminated, truncated, info = venv.step(np.full((3, 2), 50.0))  # the action is ignored
    assert np.array_equal(reward, np.zeros(3)) and not (terminated.any() or truncated.any())
    assert np.isnan(info["plasma_glucose_mg_dl"]).all() and np.array_equal(info["meal_g"], np.zeros(3))
    assert np.allclose(obs[:, H], 0.0, atol=1e-6)  # no insulin on board: the 50 U were not given
    assert np.all(obs[:, :H] == obs[:, :1]) and np.array_equal(obs[:, H + 1 :], np.tile(np.float32([0, 0, 1]), (3, 1)))
    meals = [info["meal_g"]]
    for _ in range(STEPS):
        obs, reward, terminated, truncated, info = venv.step(basal_bolus_actions(patients, info))
        meals.append(info["meal_g"])
    assert truncated.all() and not np.allclose(np.stack(meals), first["meal"])  # drawn again, not replayed


def test_new_episodes_draw_meals_and_sensor_errors_as_the_closed_loop_does(venv: GlucoseVectorEnv) -> None:
    drawn, expected = venv.core.draw(2, 9), exogenous(venv.patients[:2], SHORT, 9)
    assert all(np.array_equal(drawn[key], expected[key].T) for key in ("eaten", "announced", "noise"))
    assert drawn["eaten"].sum() > 0 and np.abs(drawn["noise"]).max() > 0


def test_an_overdose_ends_only_that_patients_episode(venv: GlucoseVectorEnv) -> None:
    venv.reset(seed=0)
    basal = venv.patients.basal * 60.0
    for step in range(STEPS):
        actions = np.stack([basal, np.zeros(3)], axis=1)
        actions[2] = [10.0, 50.0 if step < 2 else 0.0]  # the child: the largest basal and two large boluses
        obs, reward, terminated, truncated, info = venv.step(actions)
        if terminated.any():
            break
    assert terminated.tolist() == [False, False, True] and info["plasma_glucose_mg_dl"][2].min() < 54.0
    assert step < STEPS - 1 and not truncated.any()
    history = obs[:, :H].copy()
    obs, reward, terminated, _, info = venv.step(np.stack([basal, np.zeros(3)], axis=1))
    assert reward[2] == 0.0 and np.all(obs[2, :H] == obs[2, 0]) and np.isnan(info["plasma_glucose_mg_dl"][2]).all()
    assert np.array_equal(obs[:2, : H - 1], history[:2, 1:]) and np.all(reward[:2] < 0)


def test_the_same_seed_gives_the_same_episode_and_another_seed_other_meals_and_noise(venv: GlucoseVectorEnv) -> None:
    policy = lambda info: np.tile([1.0, 1.0], (3, 1))  # noqa: E731
    a, b, c = run(venv, 11, policy, 8), run(venv, 11, policy, 8), run(venv, 12, policy, 8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["obs"][0], c["obs"][0])  # another sensor error at minute 0
    venv.reset(seed=11)
    meals_11 = np.asarray(venv.core.plant.exo["announced"]).copy()
    sample_11 = venv.action_space.sample()
    venv.reset(seed=12)
    assert not np.array_equal(np.asarray(venv.core.plant.exo["announced"]), meals_11)
    venv.reset(seed=11)
    assert np.array_equal(venv.action_space.sample(), sample_11)


def test_unseeded_resets_follow_the_seeded_generator(venv: GlucoseVectorEnv) -> None:
    venv.reset(seed=21)
    after_21 = venv.reset()[0]
    venv.reset(seed=21)
    assert np.array_equal(venv.reset()[0], after_21)
    assert not np.array_equal(after_21, venv.reset(seed=21)[0])


def test_actions_are_clipped_to_the_bounds_and_bad_ones_refused(venv: GlucoseVectorEnv) -> None:
    wild = np.array([[100.0, 999.0], [-5.0, -1.0], [3.0, 60.0]])
    bounded = np.array([[10.0, 50.0], [0.0, 0.0], [3.0, 50.0]])
    venv.reset(seed=8)
    clipped = venv.step(wild)
    venv.reset(seed=8)
    expected = venv.step(bounded)
    assert all(np.array_equal(x, y) for x, y in zip(clipped[:4], expected[:4], strict=True))
    assert np.array_equal(clipped[4]["insulin_U_per_min"], expected[4]["insulin_U_per_min"])
    assert np.allclose(clipped[4]["insulin_U_per_min"][1], 0.0)
    with pytest.raises(tl.InputError, match=r"actions must have shape \(3, 2\)"):
        venv.step(np.zeros(2))
    with pytest.raises(tl.InputError, match="Every action must be finite"):
        venv.step(np.full((3, 2), np.nan))


# --- construction -------------------------------------------------------------
def test_the_model_is_found_by_its_control_interface_not_its_id() -> None:
    model = controllable_model()
    assert model.profile.control is not None and controllable_model(model.id) is model
    with pytest.raises(tl.InputError, match="Model 'pk-one-compartment' declares no control interface"):
        GlucoseVectorEnv(model="pk-one-compartment")
    settings = EnvSettings()
    assert (settings.terminate_below_mg_dl, settings.terminate_above_mg_dl, settings.history) == (10.0, 600.0, 12)


def test_patients_from_a_population_the_published_set_or_taken_in_turn() -> None:
    assert GlucoseVectorEnv(patients="published").num_envs == 30
    cycled = GlucoseVectorEnv(num_envs=5, patients=NAMES[:2], scenario=SHORT)
    assert cycled.patients.ids == (*NAMES[:2], *NAMES[:2], NAMES[0])
    drawn = GlucoseVectorEnv(num_envs=4, population_seed=3)
    assert drawn.num_envs == 4 and len(set(drawn.patients.basal)) == 4
    with pytest.raises(tl.InputError, match=r"Unknown published patients \['adult#999'\]"):
        GlucoseVectorEnv(patients=["adult#999"])
    with pytest.raises(tl.InputError, match="num_envs must be a whole number >= 1; got 0"):
        GlucoseVectorEnv(num_envs=0)
    with pytest.raises(tl.InputError, match=r"max_bolus_U = 500\.0 is above what the Insulet pump delivers"):
        GlucoseVectorEnv(max_bolus_U=500.0, scenario=SHORT)
    with pytest.raises(tl.InputError, match=r"reset\(\) takes no options; got \['x'\]"):
        cycled.reset(options={"x": 1})
    with pytest.raises(tl.InputError, match=r"Call reset\(\) before step\(\)"):
        cycled.step(np.zeros((5, 2)))


def test_a_missed_meal_bolus_ends_in_hyperglycaemia_and_gymnasiums_statistics_count_it(venv: GlucoseVectorEnv) -> None:
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    env = RecordEpisodeStatistics(venv)
    env.reset(seed=13)
    actions = np.stack([venv.patients.basal * 60.0, np.zeros(3)], axis=1)  # basal only: no meal boluses
    returns, ended, hyper = np.zeros(3), {}, False
    for step in range(1, STEPS + 1):
        _, reward, terminated, truncated, info = env.step(actions)
        returns += reward
        for i in np.flatnonzero(terminated | truncated):
            ended[int(i)] = step
            assert info["_episode"][i] and info["episode"]["l"][i] == step
            assert info["episode"]["r"][i] == pytest.approx(returns[i])
            returns[i] = 0.0
        hyper |= bool(terminated[2] and info["plasma_glucose_mg_dl"][2].max() > 600.0)
    assert hyper and ended[0] == ended[1] == STEPS and ended[2] < STEPS  # the child passed 600 mg/dL


@pytest.mark.slow
def test_the_accurate_path_reproduces_the_accurate_closed_loop() -> None:
    env = GlucoseVectorEnv(patients=NAMES, scenario=SHORT, accurate=True)
    episode = run(env, 7, lambda info: basal_bolus_actions(env.patients, info))
    reference = closed_loop(env.model, env.patients, basal_bolus(), SHORT, seed=7, accurate=True)
    assert np.allclose(episode["bg"], reference.bg, rtol=1e-9, atol=0)
