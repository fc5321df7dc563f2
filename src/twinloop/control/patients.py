"""The virtual patients of a closed-loop run, with their therapy settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from twinloop.errors import InputError

if TYPE_CHECKING:
    from twinloop.cohort.population import Cohort
    from twinloop.models.base import Model
    from twinloop.models.profile import ControlInterface


def control_interface(model: Model) -> ControlInterface:
    """The model's control interface, or a clear refusal."""
    control = model.profile.control
    if control is None:
        raise InputError(
            f"Model '{model.id}' declares no control interface (ModelProfile.control), so no insulin "
            "controller can drive it; declare the sensed observable, the insulin and carbohydrate inputs."
        )
    return control


@dataclass(frozen=True)
class Patients:
    """Patients of one model: ids, groups, parameter rows and therapy settings (arrays of n)."""

    ids: tuple[str, ...]
    groups: tuple[str, ...]
    params: np.ndarray
    basal: np.ndarray
    carb_ratio: np.ndarray
    correction_factor: np.ndarray
    age: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)

    def __getitem__(self, rows: Any) -> Patients:
        idx = np.arange(self.n)[rows]
        return Patients(
            tuple(self.ids[i] for i in idx), tuple(self.groups[i] for i in idx), self.params[idx],
            self.basal[idx], self.carb_ratio[idx], self.correction_factor[idx], self.age[idx],
        )  # fmt: skip

    @classmethod
    def build(
        cls, model: Model, ids: Sequence[str], groups: Sequence[str], params: np.ndarray, extra: dict[str, Any]
    ) -> Patients:
        """Patients from parameter rows; ``extra`` may hold drawn therapy columns."""
        control = control_interface(model)
        matrix = np.asarray(params, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape != (len(ids), len(model.parameters)):
            raise InputError(f"params must have shape ({len(ids)}, {len(model.parameters)}); got {matrix.shape}.")
        if not np.all(np.isfinite(matrix)):
            raise InputError("Every patient parameter must be finite.")
        named: dict[str, Any] = {name: matrix[:, i] for i, name in enumerate(model.parameter_names)}
        named.update(extra)
        therapy = control.therapy(named, list(ids))
        basal = np.broadcast_to(np.asarray(control.basal(named), dtype=np.float64), (len(ids),))
        for key in ("carb_ratio", "correction_factor"):
            if not np.all(np.isfinite(therapy[key]) & (therapy[key] > 0)):
                raise InputError(f"Every patient needs a {key.replace('_', ' ')} > 0; check the population's draws.")
        return cls(tuple(ids), tuple(groups), matrix, np.array(basal), np.asarray(therapy["carb_ratio"], float),
                   np.asarray(therapy["correction_factor"], float), np.asarray(therapy["age"], float))  # fmt: skip

    @classmethod
    def published(cls, model: Model, names: Sequence[str] | None = None) -> Patients:
        """The model's published patients (its presets), all or those named; the group is
        the name's part before ``#`` (``adult#001`` is an adult)."""
        names = list(model.presets) if names is None else list(names)
        if not names:
            raise InputError(f"Model '{model.id}' publishes no patients; draw them from a population instead.")
        params = np.stack([model.preset(n) for n in names])
        return cls.build(model, names, [n.split("#")[0] for n in names], params, {})

    @classmethod
    def from_cohort(cls, model: Model, cohort: Cohort) -> Patients:
        """Patients drawn by ``twinloop.cohort`` (its latent therapy columns are used)."""
        covariates = cohort.covariates
        extra = {c: covariates[c].to_numpy(float) for c in ("carb_ratio", "correction_factor", "age")
                 if c in covariates.columns}  # fmt: skip
        params = np.stack([cohort.parameter(name) for name in model.parameter_names], axis=1)
        return cls.build(model, cohort.ids, [str(g) for g in cohort.groups], params, extra)

    @classmethod
    def from_population(cls, model: Model, n: int, seed: int = 0) -> Patients:
        """``n`` patients from the model's default population."""
        from twinloop.cohort.defaults import default_population

        if not (isinstance(n, int) and n >= 1):
            raise InputError(f"The number of patients must be a whole number >= 1; got {n!r}.")
        return cls.from_cohort(model, default_population(model).sample(n, seed))
