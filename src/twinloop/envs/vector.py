"""``GlucoseVectorEnv``: N virtual patients under an agent's insulin, stepped at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from twinloop.envs.core import EnvCore, EnvSettings
from twinloop.envs.resolve import controllable_model, env_patients, env_scenario
from twinloop.errors import InputError

if TYPE_CHECKING:
    from twinloop.control.patients import Patients
    from twinloop.control.scenario import Scenario
    from twinloop.models.base import Model

SEED_BOUND = 2**31 - 1


class CoreAccess:
    """What both glucose environments expose of their core, and how an episode's seed is chosen."""

    core: EnvCore
    action_space: Any
    np_random: Any

    @property
    def model(self) -> Model:
        return self.core.model

    @property
    def patients(self) -> Patients:
        """The patients, one per environment (ids, groups, therapy settings)."""
        return self.core.patients

    @property
    def scenario(self) -> Scenario:
        return self.core.scenario

    def _episode_seed(self, seed: int | None, options: Mapping[str, Any] | None) -> int:
        """The seed of the next episode's meals and sensor errors (after ``super().reset``)."""
        check_options(options)
        if seed is not None:
            self.action_space.seed(seed)
            return seed
        return self._draw_seed()

    def _draw_seed(self) -> int:
        return int(self.np_random.integers(0, SEED_BOUND))


class GlucoseVectorEnv(CoreAccess, VectorEnv):
    """``num_envs`` virtual patients with type 1 diabetes, one control period per step.

    The patients run through the closed loop of :mod:`twinloop.control` (meals eaten at
    the scenario's times, the sensor's noise and delay, the pump's limits and increments,
    rescue carbohydrate if the scenario gives it) with the controller replaced by the
    agent: one compiled JAX step for the whole batch.

    Observation of one patient (float32, ``history + 4`` entries):

    - ``[0, history)``: CGM (mg/dL) of the last ``history`` control periods, oldest first;
      each is the mean of the sensor's readings over its period, as simglucose's
      environment gives it (a new episode repeats its first reading);
    - ``history``: insulin on board above the programmed basal (U; two 55-min
      compartments; negative when less than the basal was delivered);
    - ``history + 1``: carbohydrate announced during the last period (g; with the
      scenario's counting error; rescue carbohydrate is not announced);
    - ``history + 2``, ``history + 3``: time of day, ``sin`` and ``cos`` of
      ``2 pi minute / 1440`` (episodes start at midnight).

    Action of one patient (float32, 2 entries, clipped to the bounds): the basal rate
    (U/h, ``0..max_basal_U_per_h``) held over the period and a bolus (U,
    ``0..max_bolus_U``) delivered evenly over it; the pump rounds both to its increments.

    Reward: minus Kovatchev's risk index of the period's CGM mean,
    ``-10 f^2`` with ``f = 1.509 (ln(CGM)^1.084 - 5.381)``: 0 at 112.5 mg/dL, about
    -100 at 20 and at 600 mg/dL (:func:`twinloop.envs.risk_index`).

    An episode terminates when plasma glucose leaves ``[terminate_below_mg_dl,
    terminate_above_mg_dl]`` at any minute of a period (10 and 600 mg/dL, simglucose's
    rule) and is truncated after the scenario's days. Ended patients restart on the next
    step (``AutoresetMode.NEXT_STEP``): that step ignores their action and returns their
    first observation, reward 0, not terminated, not truncated, with fresh meals and
    sensor errors.

    ``info`` (arrays, one row per patient): ``plasma_glucose_mg_dl``,
    ``insulin_U_per_min`` and ``carbs_g_per_min`` at each minute of the period (NaN for a
    patient restarting), ``rescue_g`` taken, and ``cgm_mg_dl`` and ``meal_g``, the
    observation's latest CGM and announced carbohydrate in float64.

    Arguments:
        num_envs: the number of patients (None: one per given patient, one from a population).
        model: a model, a model id, or None for the first registered model that declares a
            control interface (built-in models first).
        patients: ``"population"`` (drawn from the model's default population),
            ``"published"``, a list of published names, or a ``twinloop.control.Patients``;
            given patients are taken in turn when ``num_envs`` differs from their number.
        population_seed: the seed of the population draw.
        scenario: a ``twinloop.control.Scenario`` or a mapping of its settings; None gives
            the standard three meals with times and sizes varying (30 min, 20 %).
        history, max_basal_U_per_h, max_bolus_U, terminate_below_mg_dl,
            terminate_above_mg_dl, accurate: see :class:`twinloop.envs.core.EnvSettings`.

    Seeding: ``reset(seed=s)`` draws meals and sensor errors from ``s`` (the first
    episode then equals ``twinloop.control.closed_loop(..., seed=s)`` under the same
    actions) and seeds the action space; ``reset()`` and restarts draw from the
    environment's generator.

    Example:
        >>> import numpy as np
        >>> from twinloop.envs import GlucoseVectorEnv
        >>> env = GlucoseVectorEnv(num_envs=4)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape
        (4, 16)
        >>> actions = np.tile([1.0, 0.0], (4, 1)).astype(np.float32)
        >>> obs, reward, terminated, truncated, info = env.step(actions)
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        num_envs: int | None = None,
        *,
        model: Model | str | None = None,
        patients: Any = "population",
        population_seed: int = 0,
        scenario: Scenario | Mapping[str, Any] | None = None,
        history: int = 12,
        max_basal_U_per_h: float = 10.0,
        max_bolus_U: float = 50.0,
        terminate_below_mg_dl: float | None = 10.0,
        terminate_above_mg_dl: float | None = 600.0,
        accurate: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            raise InputError(f"GlucoseVectorEnv renders nothing; render_mode must be None, got {render_mode!r}.")
        settings = EnvSettings(history, max_basal_U_per_h, max_bolus_U, terminate_below_mg_dl,
                               terminate_above_mg_dl, accurate)  # fmt: skip
        chosen = controllable_model(model)
        self.core = EnvCore(chosen, env_patients(chosen, patients, num_envs, population_seed), env_scenario(scenario),
                            settings)  # fmt: skip
        self.num_envs = self.core.n
        self.render_mode = None
        self.single_observation_space, self.single_action_space = self.core.spaces()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode for every patient."""
        super().reset(seed=seed)
        episode = self._episode_seed(seed, options)
        self._ended[:] = False
        return self.core.reset(episode)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One control period of every patient (see the class for what comes back)."""
        fresh = self._ended.copy()
        seed = self._draw_seed() if fresh.any() else None
        out = self.core.step(actions, fresh, seed)
        self._ended = out[2] | out[3]
        return out


def check_options(options: Mapping[str, Any] | None) -> None:
    """The glucose environments take no reset options."""
    if options:
        raise InputError(f"reset() takes no options; got {sorted(options)}. Configure the environment when making it.")
