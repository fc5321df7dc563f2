"""``GlucoseEnv``: one virtual patient under an agent's insulin (a ``gymnasium.Env``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np

from twinloop.control.patients import Patients
from twinloop.envs.core import EnvCore, EnvSettings
from twinloop.envs.resolve import controllable_model, env_patients, env_scenario
from twinloop.envs.vector import CoreAccess
from twinloop.errors import InputError

if TYPE_CHECKING:
    from twinloop.control.scenario import Scenario
    from twinloop.models.base import Model


class GlucoseEnv(CoreAccess, gymnasium.Env):
    """One virtual patient with type 1 diabetes, one control period per step.

    The observation, action, reward, termination, truncation and ``info`` are those of
    one patient of :class:`twinloop.envs.GlucoseVectorEnv` (see there); the episode does
    not restart by itself: call ``reset()`` once it has ended.

    Arguments:
        patient: a published patient's name (``"adult#001"``), a ``Patients`` of one, or
            None for one patient drawn from the model's default population with
            ``population_seed``.
        model, population_seed, scenario, history, max_basal_U_per_h, max_bolus_U,
            terminate_below_mg_dl, terminate_above_mg_dl, accurate: as for
            :class:`twinloop.envs.GlucoseVectorEnv`.

    Example:
        >>> import numpy as np
        >>> from twinloop.envs import GlucoseEnv
        >>> env = GlucoseEnv()
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], dtype=np.float32))
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        *,
        model: Model | str | None = None,
        patient: str | Patients | None = None,
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
            raise InputError(f"GlucoseEnv renders nothing; render_mode must be None, got {render_mode!r}.")
        settings = EnvSettings(history, max_basal_U_per_h, max_bolus_U, terminate_below_mg_dl,
                               terminate_above_mg_dl, accurate)  # fmt: skip
        chosen = controllable_model(model)
        if isinstance(patient, Patients) and patient.n != 1:
            raise InputError(f"GlucoseEnv drives one patient; got {patient.n}. Use GlucoseVectorEnv for several.")
        given = "population" if patient is None else [patient] if isinstance(patient, str) else patient
        self.core = EnvCore(chosen, env_patients(chosen, given, 1, population_seed), env_scenario(scenario), settings)
        self.render_mode = None
        self.observation_space, self.action_space = self.core.spaces()

    @property
    def patients(self) -> Patients:
        """The patient, as a ``Patients`` of one (id, group, therapy settings)."""
        return self.core.patients

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode; ``seed`` draws its meals and sensor errors."""
        super().reset(seed=seed)
        obs, info = self.core.reset(self._episode_seed(seed, options))
        return obs[0], {k: v[0] for k, v in info.items()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One control period under ``action`` (basal U/h, bolus U)."""
        a = np.asarray(action, dtype=np.float64) if _numeric(action) else action
        if not (isinstance(a, np.ndarray) and a.shape == (2,)):
            raise InputError(f"action must be 2 numbers (basal U/h, bolus U); got {action!r}.")
        obs, reward, terminated, truncated, info = self.core.step(a[None, :])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {k: v[0] for k, v in info.items()}


def _numeric(value: Any) -> bool:
    try:
        np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True
