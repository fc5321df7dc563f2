"""Observation designs for amortized calibration: how training observations are made.

A design states the nominal observation times of one observable, how far real visits
drift from them (jitter), how often a planned observation is missing and the
measurement noise. ``simulate_observations`` draws parameters from a prior, runs the
engine and applies the design, giving the (parameters, irregular series) pairs a
neural posterior estimator learns from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from twinloop.calibrate.noise import NoiseModel, noise_for
from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import ParameterMap
from twinloop.errors import InputError
from twinloop.models.inputs import Inputs
from twinloop.simulate import simulate


@dataclass(frozen=True)
class ObservationDesign:
    """How one observable is observed.

    Arguments:
        observable: the model observable measured.
        times: nominal observation times (model time units).
        jitter: standard deviation of a visit's shift from its nominal time.
        missing: probability that a planned observation is missing (completely at random).
        resolution: the simulation grid step; jittered times are rounded to it.
        noise: measurement noise (default: the noise the model declares for the
            observable, filled in by :meth:`for_model`).
        inputs: the treatment over the observation span.
    """

    observable: str
    times: tuple[float, ...]
    jitter: float = 0.0
    missing: float = 0.0
    resolution: float = 1.0
    noise: NoiseModel | None = None
    inputs: Inputs = field(default_factory=Inputs)

    def __post_init__(self) -> None:
        times = tuple(float(t) for t in np.atleast_1d(self.times))
        if not times or any(t <= 0 for t in times) or list(times) != sorted(times):
            raise InputError(f"ObservationDesign.times must be increasing and > 0; got {times}.")
        if self.jitter < 0 or not 0 <= self.missing < 1 or self.resolution <= 0:
            raise InputError(
                f"ObservationDesign needs jitter >= 0, 0 <= missing < 1 and resolution > 0; "
                f"got {self.jitter}, {self.missing}, {self.resolution}."
            )
        object.__setattr__(self, "times", times)

    def for_model(self, model: Any) -> ObservationDesign:
        """This design with the noise ``model`` declares for the observable when none is given."""
        return self if self.noise is not None else replace(self, noise=noise_for(model, self.observable))

    @property
    def noise_model(self) -> NoiseModel:
        if self.noise is None:
            raise InputError(
                f"ObservationDesign of '{self.observable}' has no noise; give noise=NoiseModel(...) or call "
                "design.for_model(model) to use the noise the model declares."
            )
        return self.noise

    @property
    def horizon(self) -> float:
        return self.times[-1] + 3.0 * self.jitter

    def to_dict(self) -> dict[str, Any]:
        return {
            "observable": self.observable,
            "times": list(self.times),
            "jitter": self.jitter,
            "missing": self.missing,
            "resolution": self.resolution,
            "noise": self.noise_model.to_dict(),
            "inputs": repr(self.inputs),
        }


@dataclass(frozen=True)
class SimulatedSeries:
    """Padded irregular series: ``times``, ``values`` and ``mask`` of shape ``(n, k)``."""

    log_theta: np.ndarray
    times: np.ndarray
    values: np.ndarray
    mask: np.ndarray
    failed: int


def visit_times(design: ObservationDesign, n: int, rng: np.random.Generator) -> np.ndarray:
    """Jittered visit times ``(n, k)`` on the design's grid, sorted, inside ``(0, horizon]``."""
    nominal = np.asarray(design.times)
    shifted = nominal + design.jitter * rng.standard_normal((n, nominal.size))
    step = design.resolution
    grid_max = np.floor(design.horizon / step) * step
    return np.sort(np.clip(np.round(shifted / step) * step, step, grid_max), axis=1)


def simulate_observations(
    model: Any,
    pmap: ParameterMap,
    prior: GaussianPrior,
    design: ObservationDesign,
    n: int,
    *,
    seed: int,
    progress: bool = False,
) -> SimulatedSeries:
    """Draw ``n`` parameter sets from the prior and observe each under the design.

    Failed integrations are dropped (their count is ``failed``).
    """
    rng = np.random.default_rng(seed)
    log_theta = prior.sample(n, rng)
    step = design.resolution
    grid = np.arange(0.0, np.floor(design.horizon / step) * step + step / 2, step)
    traj = simulate(model, pmap.full_batch(log_theta), design.inputs, times=grid, progress=progress)
    curves = traj[design.observable]
    ok = np.all(np.isfinite(curves), axis=1)
    if traj.failures:
        failed_ids = set(traj.failures)
        ok &= np.array([pid not in failed_ids for pid in traj.patient_ids])
    times = visit_times(design, n, rng)
    idx = np.clip(np.round(times / step).astype(int), 0, grid.size - 1)
    mu = np.take_along_axis(curves, idx, axis=1)
    values = design.noise_model.sample(mu, rng)
    mask = rng.random(times.shape) >= design.missing
    mask[np.arange(n), rng.integers(0, times.shape[1], n)] |= ~mask.any(axis=1)  # keep at least one
    return SimulatedSeries(log_theta[ok], times[ok], values[ok], mask[ok], int((~ok).sum()))
