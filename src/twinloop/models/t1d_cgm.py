"""CGM sensor observation model for the T1D core (Breton & Kovatchev 2008, as in simglucose).

A sensor reads subcutaneous glucose every ``sample_time`` minutes. Without noise (the
default) a reading is the subcutaneous glucose, clipped to the sensor's range. With
noise, the error is a Johnson-SU transform of an AR(1) process on a 15-minute grid,
``e_k = PACF * (e_{k-1} + z_k)``, ``eps = xi + lambda * sinh((e - gamma) / delta)``,
cubic-interpolated to the sample times; each patient gets an independent error path
from the seed. Sensor parameters are simglucose's (Dexcom, GuardianRT, Navigator).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from scipy.interpolate import CubicSpline

from twinloop.errors import InputError

NOISE_GRID_MIN = 15.0


@dataclass(frozen=True)
class SensorSpec:
    """Published parameters of one CGM sensor."""

    name: str
    sample_time_min: float
    pacf: float
    gamma: float
    lam: float
    delta: float
    xi: float
    min_mg_dl: float
    max_mg_dl: float


@cache
def sensors() -> dict[str, SensorSpec]:
    """The sensors simglucose publishes, by name."""
    text = resources.files("twinloop.models").joinpath("data", "cgm_sensors.csv").read_text()
    return {
        r["Name"]: SensorSpec(
            r["Name"],
            float(r["sample_time"]),
            float(r["PACF"]),
            float(r["gamma"]),
            float(r["lambda"]),
            float(r["delta"]),
            float(r["xi"]),
            float(r["min"]),
            float(r["max"]),
        )
        for r in csv.DictReader(text.splitlines())
    }


@dataclass(frozen=True)
class CGMSensor:
    """A CGM sensor; ``noise=False`` (default) gives noise-free readings.

    Example:
        >>> sensor = CGMSensor("GuardianRT", noise=True)
        >>> t, readings = sensor.measure(traj.times, traj["subcutaneous_glucose"], seed=1)
    """

    name: str = "GuardianRT"
    noise: bool = False

    def __post_init__(self) -> None:
        if self.name not in sensors():
            raise InputError(f"Unknown CGM sensor '{self.name}'; known sensors: {', '.join(sensors())}.")

    @property
    def spec(self) -> SensorSpec:
        return sensors()[self.name]

    def sample_times(self, times_min: np.ndarray) -> np.ndarray:
        """The sensor's reading times inside the span of ``times_min``."""
        start, end = float(times_min[0]), float(times_min[-1])
        step = self.spec.sample_time_min
        return start + step * np.arange(int(np.floor((end - start) / step + 1e-9)) + 1)

    def errors(self, n_patients: int, sample_times: np.ndarray, seed: int) -> np.ndarray:
        """``(n_patients, n_samples)`` sensor errors in mg/dL (independent paths per patient)."""
        s = self.spec
        rng = np.random.default_rng(seed)
        span = sample_times[-1] - sample_times[0]
        n_grid = int(np.ceil(span / NOISE_GRID_MIN)) + 2
        z = rng.standard_normal((n_patients, n_grid))
        latent = np.empty_like(z)
        latent[:, 0] = z[:, 0] * np.sqrt(s.pacf**2 / (1.0 - s.pacf**2))  # start in the stationary law
        for k in range(1, n_grid):
            latent[:, k] = s.pacf * (latent[:, k - 1] + z[:, k])
        eps = s.xi + s.lam * np.sinh((latent - s.gamma) / s.delta)
        grid = sample_times[0] + NOISE_GRID_MIN * np.arange(n_grid)
        return CubicSpline(grid, eps, axis=1)(sample_times)

    def measure(
        self, times_min: np.ndarray, glucose_mg_dl: np.ndarray, *, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Readings of subcutaneous glucose ``(n_patients, n_times)`` given at ``times_min``.

        Returns:
            The reading times and the ``(n_patients, n_samples)`` readings in mg/dL.

        Raises:
            InputError: if noise is on and no seed is given, or the shapes disagree.
        """
        times = np.asarray(times_min, dtype=np.float64)
        glucose = np.atleast_2d(np.asarray(glucose_mg_dl, dtype=np.float64))
        if glucose.shape[1] != times.size:
            raise InputError(f"glucose has {glucose.shape[1]} columns for {times.size} times; give one per time.")
        t = self.sample_times(times)
        readings = np.stack([np.interp(t, times, row) for row in glucose])
        if self.noise:
            if seed is None:
                raise InputError("A noisy CGM sensor needs an explicit seed (measure(..., seed=...)).")
            readings = readings + self.errors(glucose.shape[0], t, seed)
        return t, np.clip(readings, self.spec.min_mg_dl, self.spec.max_mg_dl)
