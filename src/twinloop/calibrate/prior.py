"""The prior of one patient's parameters: a Gaussian on their unconstrained values (the
logarithm of a log-scale parameter, the value of a linear-scale one).

It is taken from a population by moment matching: draw a large conditioned cohort
(covariate effects, inter-individual variability, plausibility constraints and all),
and use the mean and covariance of the transformed parameters. Calibration then samples a
standardized vector ``z ~ N(0, I)`` and maps it through the Cholesky factor, which
keeps NUTS well conditioned whatever the parameters' scales.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinloop.errors import InputError


@dataclass(frozen=True)
class GaussianPrior:
    """``theta ~ N(mean, cov)`` over the named parameters' unconstrained values (their
    logarithms, or the bounded transform of a :class:`~twinloop.calibrate.ParameterMap`)."""

    names: tuple[str, ...]
    mean: np.ndarray
    cov: np.ndarray

    def __post_init__(self) -> None:
        k = len(self.names)
        mean, cov = np.asarray(self.mean, dtype=float), np.asarray(self.cov, dtype=float)
        if mean.shape != (k,) or cov.shape != (k, k):
            raise InputError(f"A prior over {k} parameters needs a mean of shape ({k},) and a ({k}, {k}) covariance.")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError as e:
            raise InputError(f"The prior covariance over {list(self.names)} is not positive definite.") from e
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)

    @property
    def chol(self) -> np.ndarray:
        return np.linalg.cholesky(self.cov)

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, k)`` log-parameter draws."""
        return self.mean + rng.standard_normal((n, len(self.names))) @ self.chol.T

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "mean": self.mean.tolist(), "cov": self.cov.tolist()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GaussianPrior:
        return cls(tuple(raw["names"]), np.asarray(raw["mean"]), np.asarray(raw["cov"]))

    @classmethod
    def from_samples(
        cls,
        names: Sequence[str],
        values: np.ndarray,
        jitter: float = 1e-8,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        scales: Sequence[str] | None = None,
    ) -> GaussianPrior:
        """Moment-match samples ``(n, k)`` of the named parameters after ``transform``
        (values -> unconstrained values), or on each one's scale (``scales``: ``"log"`` or
        ``"linear"`` per parameter; all ``"log"`` when not given)."""
        if transform is None:
            on_log = np.array([s == "log" for s in (scales or ["log"] * len(names))], dtype=bool)
            if len(on_log) != len(names):
                raise InputError(
                    f"scales must give one scale per parameter of {list(names)}; got {list(scales or [])}."
                )
            bad = np.argwhere(on_log & (values <= 0))
            if bad.size:
                raise InputError(
                    f"Parameter {names[int(bad[0, 1])]!r} takes values <= 0 in the population; its log-prior is "
                    "undefined. Declare it scale='linear' in the model."
                )
            logs = np.where(on_log, np.log(np.where(on_log, values, 1.0)), values)
        else:
            logs = transform(values)
        cov = np.atleast_2d(np.cov(logs, rowvar=False)) + jitter * np.eye(len(names))
        return cls(tuple(names), logs.mean(axis=0), cov)

    @classmethod
    def from_population(
        cls,
        population: Any,
        names: Sequence[str],
        *,
        n: int = 4000,
        seed: int = 0,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        scales: Sequence[str] | None = None,
        **condition: Any,
    ) -> GaussianPrior:
        """The Gaussian approximation of a population's marginal over ``names`` (on their
        ``scales``, all log by default, or after ``transform``), optionally conditioned,
        e.g. ``group=["adult"]`` (see ``Population.condition``)."""
        pop = population.condition(**condition) if condition else population
        cohort = pop.sample(n, seed=seed)
        missing = [p for p in names if p not in cohort.parameter_names]
        if missing:
            raise InputError(f"Parameters {missing} are not parameters of the population's model.")
        values = np.stack([cohort.parameter(p) for p in names], axis=1)
        return cls.from_samples(names, values, transform=transform, scales=scales)

    def conditioned(self, known: Mapping[str, float]) -> GaussianPrior:
        """The Gaussian conditional of the other parameters given the ``known`` ones
        (unconstrained values), e.g. a patient's measured body weight."""
        unknown = [n for n in known if n not in self.names]
        if unknown:
            raise InputError(f"Cannot condition on {unknown}: the prior is over {list(self.names)}.")
        keep = [i for i, n in enumerate(self.names) if n not in known]
        given = [self.names.index(n) for n in known]
        if not keep:
            raise InputError("Conditioning on every parameter of the prior leaves nothing to estimate.")
        if not given:
            return self
        x = np.array([known[self.names[i]] for i in given])
        s_kg = self.cov[np.ix_(keep, given)]
        gain = s_kg @ np.linalg.inv(self.cov[np.ix_(given, given)])
        mean = self.mean[keep] + gain @ (x - self.mean[given])
        cov = self.cov[np.ix_(keep, keep)] - gain @ s_kg.T
        return GaussianPrior(tuple(self.names[i] for i in keep), mean, (cov + cov.T) / 2.0)
