"""Lorenz-63 twin experiments in the settings of Sakov et al. (2012, Table 1), the reference
case of DAPPER (``dapper/mods/Lorenz63/sakov2012.py``): RK4 with ``dt = 0.01``, all three
components observed every 0.25 time units (25 steps) with ``R = 2 I``, initial ensemble
and truth drawn from ``N(x0, 2 I)``, scores averaged after a burn-in of 16 time units.

Shared by ``tests/test_assimilation.py`` and ``benchmarks/bench_l63.py``: the truth and
observations, a loop that runs a twinloop assimilator cycle by cycle, the scores, and
DAPPER run on the very same truth and observations in its own environment
(``dapper_lorenz63.py``, started as a subprocess so that both can run at once). Both sides
propagate with the same numpy RK4 (``lorenz63_model.py``) and draw their random numbers
from the same seed in the same order (initial ensemble, observation perturbations,
rotations, resampling, jitter), so they are common-random-number runs: the stochastic
EnKF's stay identical, the others' stay together for hundreds of cycles and share the
truth's difficulty after that, which keeps the Monte Carlo error of their comparison small.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinloop.twin import Ensemble
from twinloop.twin.assimilation import AbstractAssimilator

WORKER = Path(__file__).with_name("dapper_lorenz63.py")
ROOT = Path(__file__).resolve().parents[2]


def _load_model() -> Any:
    spec = importlib.util.spec_from_file_location("lorenz63_model", Path(__file__).with_name("lorenz63_model.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model = _load_model()
X0, DT, DKO, R_VAR, B0_VAR, BURN_IN = model.X0, model.DT, model.DKO, model.R_VAR, model.B0_VAR, model.BURN_IN
propagate = model.propagate
LOST_RMSE = 3.0


@dataclass(frozen=True)
class Truth:
    """``xx`` the truth at every step (K+1, 3), ``yy`` the observations (Ko+1, 3), the
    ``ko``-th at step ``(ko + 1) * DKO`` (DAPPER's convention: none at time 0)."""

    xx: np.ndarray
    yy: np.ndarray

    @property
    def cycles(self) -> int:
        return int(self.yy.shape[0])

    def at_obs(self) -> np.ndarray:
        return self.xx[DKO::DKO][: self.cycles]

    def scored(self) -> np.ndarray:
        """Which cycles count: analysis times after the burn-in."""
        return (np.arange(1, self.cycles + 1) * DKO * DT) > BURN_IN


def simulate(cycles: int, seed: int) -> Truth:
    rng = np.random.default_rng(seed)
    x = X0 + np.sqrt(B0_VAR) * rng.standard_normal(3)
    xx = np.empty((cycles * DKO + 1, 3))
    xx[0] = x
    for k in range(cycles * DKO):
        x = propagate(x, 1)
        xx[k + 1] = x
    yy = xx[DKO::DKO][:cycles] + np.sqrt(R_VAR) * rng.standard_normal((cycles, 3))
    return Truth(xx, yy)


@dataclass
class Run:
    """Analysis means and variances (cycles, 3) of one filter, and what it recorded."""

    mean: np.ndarray
    variance: np.ndarray
    seconds: float
    update_seconds: float = float("nan")
    resampled: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    ess: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def errors(self, truth: Truth) -> np.ndarray:
        """The analysis RMSE over the three components at each scored cycle."""
        return np.sqrt(np.mean((self.mean - truth.at_obs()) ** 2, axis=1))[truth.scored()]

    def rmse(self, truth: Truth, where: np.ndarray | None = None) -> float:
        """DAPPER's ``rmse.a``: the time average of the analysis RMSE over the components
        (over the scored cycles, or those of them ``where`` is true)."""
        errors = self.errors(truth)
        return float(np.mean(errors if where is None else errors[where]))

    def lost(self, truth: Truth) -> np.ndarray:
        """Scored cycles at which the filter has lost the truth: analysis RMSE above
        ``LOST_RMSE``, more than twice the observations' own error."""
        return self.errors(truth) > LOST_RMSE

    def spread(self, truth: Truth) -> float:
        """DAPPER's ``spread.a`` (its ``rms`` field summary): time average of ``sqrt(mean variance)``."""
        return float(np.mean(np.sqrt(np.mean(self.variance, axis=1))[truth.scored()]))

    def ms_per_cycle(self) -> float:
        return 1e3 * self.seconds / self.mean.shape[0]


def _moments(ens: Ensemble) -> tuple[np.ndarray, np.ndarray]:
    x = ens.states
    if ens.weights is None:
        return x.mean(axis=0), x.var(axis=0, ddof=1)
    w = ens.weights
    mean = w @ x
    n_eff = 1.0 / (w @ w)
    unbias = 1.0 if 1.0 - w.max() < 1e-10 else n_eff / (n_eff - 1.0)
    return mean, unbias * (w @ (x - mean) ** 2)


def run_twinloop(filt: AbstractAssimilator, truth: Truth, n: int, seed: int) -> Run:
    """Cycle ``filt`` over ``truth``'s observations from an ensemble of ``n`` drawn from the prior."""
    rng = np.random.default_rng(seed)
    states = X0 + np.sqrt(B0_VAR) * rng.standard_normal((n, 3))
    ens = Ensemble(np.zeros((n, 0)), states, 0.0)
    r, nonneg = np.full(3, R_VAR), np.zeros(3, bool)
    mean, var = np.empty((truth.cycles, 3)), np.empty((truth.cycles, 3))
    resampled, ess = np.zeros(truth.cycles, bool), np.full(truth.cycles, np.nan)
    in_update = 0.0
    start = time.perf_counter()
    for ko in range(truth.cycles):
        ens = Ensemble(ens.theta, propagate(ens.states, DKO), ens.time + DKO * DT, ens.weights)
        tick = time.perf_counter()
        ens = filt.update(ens, ens.states, truth.yy[ko], r, nonneg, rng)
        in_update += time.perf_counter() - tick
        mean[ko], var[ko] = _moments(ens)
        resampled[ko] = bool(getattr(filt, "last_resampled", False))
        ess[ko] = float(getattr(filt, "last_ess", np.nan))
    return Run(mean, var, time.perf_counter() - start, in_update, resampled, ess)


# --- DAPPER, in its own environment --------------------------------------------------
DAPPER_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "enkf": ("EnKF", {"upd_a": "PertObs", "N": 10, "infl": 1.04}),
    "etkf": ("EnKF", {"upd_a": "Sqrt", "N": 10, "infl": 1.02, "rot": True}),
    "enkf_n": ("EnKF_N", {"N": 10, "rot": True}),
    "pf": ("PartFilt", {"N": 100, "reg": 2.4, "NER": 0.3}),
}


def dapper_python() -> Path | None:
    """The DAPPER environment's interpreter: ``TWINLOOP_DAPPER_PYTHON`` or ``.venv-dapper``
    beside the checkout's ``.venv``; ``None`` when neither exists."""
    configured = os.environ.get("TWINLOOP_DAPPER_PYTHON")
    candidates = [Path(configured)] if configured else []
    candidates += [Path(sys.prefix).parent / ".venv-dapper" / "bin" / "python", ROOT / ".venv-dapper/bin/python"]
    return next((c for c in candidates if c.exists()), None)


class DapperJob:
    """DAPPER's filters running on ``truth`` in a subprocess; :meth:`result` waits for them."""

    def __init__(self, truth: Truth, labels: list[str], seed: int, python: Path | None = None) -> None:
        python = python or dapper_python()
        if python is None:
            raise FileNotFoundError("No DAPPER environment: run `make env` (it builds .venv-dapper from envs/dapper).")
        self._dir = tempfile.TemporaryDirectory(prefix="twinloop-dapper-")
        folder = Path(self._dir.name)
        methods = [[label, *DAPPER_METHODS[label]] for label in labels]
        np.savez(
            folder / "job.npz",
            xx=truth.xx,
            yy=truth.yy,
            dt=DT,
            dko=DKO,
            seed=seed,
            methods=json.dumps(methods),
        )
        self._out = folder / "out.npz"
        env = {**os.environ, "MPLBACKEND": "agg", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self._proc = subprocess.Popen(
            [str(python), "-P", str(WORKER), str(folder / "job.npz"), str(self._out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=folder,
        )
        self.labels = labels

    def result(self, timeout: float = 600.0) -> tuple[dict[str, Run], str]:
        """Each label's run (the ensembles leaving each update, like twinloop's), the same
        labels suffixed ``.a`` (the ensembles of DAPPER's ``rmse.a``: a particle filter's
        weighted ensemble before resampling), and DAPPER's version."""
        try:
            _, err = self._proc.communicate(timeout=timeout)
            if self._proc.returncode != 0:
                raise RuntimeError(f"DAPPER worker failed ({self._proc.returncode}):\n{err.decode()[-3000:]}")
            runs = {}
            with np.load(self._out) as out:
                for label in self.labels:
                    extra = {}
                    if f"{label}/resampled" in out.files:
                        extra["resampled"] = out[f"{label}/resampled"] > 0.5
                    seconds = float(out[f"{label}/seconds"])
                    runs[label] = Run(out[f"{label}/mean"], out[f"{label}/variance"], seconds, **extra)
                    runs[f"{label}.a"] = Run(out[f"{label}/mean.a"], out[f"{label}/variance.a"], seconds, **extra)
                version = str(out["dapper_version"])
            return runs, version
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
            self._dir.cleanup()


def compare(
    filters: dict[str, Callable[[], AbstractAssimilator]], sizes: dict[str, int], cycles: int, seed: int
) -> dict[str, Any]:
    """twinloop and DAPPER side by side on one truth (used by the benchmark)."""
    truth = simulate(cycles, seed)
    job = DapperJob(truth, list(filters), seed + 1)  # the same seed: common random numbers
    ours = {label: run_twinloop(make(), truth, sizes[label], seed + 1) for label, make in filters.items()}
    theirs, version = job.result()
    return {"truth": truth, "twinloop": ours, "dapper": theirs, "dapper_version": version}
