"""``PatientTwin``: one patient's calibrated, synchronized, forecasting model.

A twin holds an ensemble (fitted log-parameters + current state per member), the
log of every observation and dose it has seen, its innovation history, drift events
and the forecasts it has issued with their scores. Times in its tables are UTC
timestamps; internally they are model time from the twin's ``origin``.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np
import pandas as pd

from twinloop.calibrate.bayes import Calibrator
from twinloop.calibrate.noise import NoiseModel, noise_for
from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import CalibrationProblem, ParameterMap
from twinloop.connect.ingest import harmonize
from twinloop.connect.schema import DOSE_COLUMNS, OBSERVATION_COLUMNS, empty_doses, empty_observations
from twinloop.connect.timebase import inputs_from_doses, to_model_time, to_timestamps, unit_seconds
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.models.registry import get as get_model
from twinloop.simulate.engine import SolverSettings
from twinloop.twin.assimilation import assimilator, innovation
from twinloop.twin.drift import DriftDetector
from twinloop.twin.endpoints import endpoint
from twinloop.twin.ensemble import Ensemble, propagate
from twinloop.twin.forecast import Forecast

# What a twin fits by default for the built-in cores (log scale).
DEFAULT_FIT = {
    "t1d-uva-padova": ("Gpb", "Vmx", "kp3", "kabs"),
    "tgi-claret": ("y0", "KL", "KD", "lam"),
    "tgi-claret-2cmt": ("y0", "KL", "KD", "lam"),
    "tgi-stein": ("y0", "g", "d"),
    "tgi-simeoni": ("w0", "lambda0", "lambda1", "k2"),
}
SNAPSHOTS = 12


@dataclass
class TwinConfig:
    """How a twin assimilates, detects drift and recalibrates."""

    assimilation: Literal["enkf", "etkf", "pf"] = "enkf"
    members: int = 500
    param_walk_sd: float = 0.01  # log-scale random walk of the parameters per sync
    drift: dict[str, Any] = field(default_factory=lambda: {"method": "cusum", "allowance": 1.0, "h": 4.0})
    recalibration: Literal["reassimilate", "none"] = "reassimilate"
    recalibration_lookback: int = 3  # syncs
    recalibration_spread: float = 1.0  # of the prior sd, added to the parameters
    noise: dict[str, dict[str, float]] = field(default_factory=dict)
    rtol: float = 1e-5
    atol: float = 1e-6
    seed: int = 0

    def noise_model(self, observable: str) -> NoiseModel:
        declared = {k: NoiseModel(**v) for k, v in self.noise.items()}
        return noise_for(observable, declared)

    @property
    def settings(self) -> SolverSettings:
        return SolverSettings(rtol=self.rtol, atol=self.atol)


@dataclass
class SyncReport:
    version: int
    assimilated: int
    late: int
    innovation: dict[str, Any]
    drift: bool
    recalibrated: bool
    scored_forecasts: list[str]


def typical_parameters(population: Any, n: int = 2000, seed: int = 0) -> np.ndarray:
    """A population's typical patient: the median of each parameter (derived ones recomputed)."""
    cohort = population.sample(n, seed=seed)
    model = get_model(cohort.model_id)
    base = np.median(cohort.parameters, axis=0)
    base = np.array([base[cohort.parameter_names.index(p)] for p in model.parameter_names])
    latent = model.latent(model.param_map(base)) if model.latent else {}
    values = model.rederive(model.param_map(base), {k: float(v) for k, v in latent.items()})
    return np.array([float(values[p]) for p in model.parameter_names])


def _initial_states(model: Model, params: np.ndarray) -> np.ndarray:
    p = {name: jnp.asarray(params[:, i]) for i, name in enumerate(model.parameter_names)}
    return np.asarray(model.initial_state(p), dtype=np.float64).T


class PatientTwin:
    """A patient-anchored twin. Build one with :meth:`create`."""

    def __init__(
        self,
        model: Model,
        pmap: ParameterMap,
        prior: GaussianPrior,
        ensemble: Ensemble,
        origin: pd.Timestamp,
        config: TwinConfig,
        twin_id: str,
        subject_id: str,
    ) -> None:
        self.model = model
        self.pmap = pmap
        self.prior = prior
        self.ensemble = ensemble
        self.origin = origin
        self.config = config
        self.id = twin_id
        self.subject_id = subject_id
        self.version = 0
        self.observations = empty_observations()
        self.doses = empty_doses()
        self.innovations: list[dict[str, Any]] = []
        self.drift_events: list[dict[str, Any]] = []
        self.forecasts: list[Forecast] = []
        self.snapshots: list[tuple[int, bytes]] = []
        self.calibration: dict[str, Any] = {}
        self.detector = DriftDetector(**config.drift)
        self._rng = np.random.default_rng(config.seed)

    # --- construction --------------------------------------------------------
    @classmethod
    def create(
        cls,
        model: Model | str,
        observations: pd.DataFrame,
        inputs: pd.DataFrame | None = None,
        *,
        prior: Any = None,
        fit: tuple[str, ...] | None = None,
        base: np.ndarray | None = None,
        method: Literal["nuts", "svi", "enkf", "npe"] = "nuts",
        config: TwinConfig | None = None,
        twin_id: str | None = None,
        origin: pd.Timestamp | str | None = None,
        calibrator: Mapping[str, Any] | None = None,
        amortized: Any | None = None,
    ) -> PatientTwin:
        """Calibrate a twin on a patient's data and set up its ensemble.

        Arguments:
            model: the model or its registry id.
            observations: canonical observation table of one patient (UTC times).
            inputs: canonical dose table over the same span (insulin, meals, drugs).
            prior: a ``Population`` (moment-matched to a log-normal prior) or a ``GaussianPrior``.
            fit: the parameters to calibrate (default ``DEFAULT_FIT`` for the model).
            base: the values of the parameters not fitted (default: the population's typical patient).
            method: ``"nuts"`` (default) or ``"svi"`` calibrate on all the data, then the
                posterior draws become the ensemble; ``"enkf"`` draws the ensemble from the
                prior and assimilates the data window by window (fast, approximate);
                ``"npe"`` draws the ensemble from the ``amortized`` posterior of all the data
                (milliseconds), after which syncs assimilate new data with the EnKF.
            amortized: a trained :class:`~twinloop.calibrate.AmortizedPosterior` for this
                model, parameters and treatment; the prior, fitted parameters and base values
                are then its own (``prior``, ``fit`` and ``base`` are not used). With ``"npe"``
                it gives the ensemble; with ``"nuts"`` its draws start the chains (pass a
                shorter ``num_warmup``).
            config: :class:`TwinConfig`; calibrator: settings passed to ``Calibrator``.
            origin: time zero (default: the first observation or dose, to the minute).
        """
        model = get_model(model) if isinstance(model, str) else model
        config = config or TwinConfig()
        names = tuple(fit or DEFAULT_FIT.get(model.id, ()))
        if not names:
            raise InputError(f"Say which parameters of '{model.id}' to fit (fit=...); it has no default set.")
        if amortized is not None:
            if amortized.model.id != model.id or amortized.model.version != model.version:
                raise InputError(
                    f"The amortized posterior was trained on {amortized.model.id} {amortized.model.version}; "
                    f"this twin's model is {model.id} {model.version}."
                )
            prior, base, names = amortized.prior, amortized.parameters.base, tuple(amortized.prior.names)
        if prior is None:
            raise InputError("A twin needs a prior (a Population or a GaussianPrior) or an amortized posterior.")
        if isinstance(prior, GaussianPrior):
            gprior = prior
            if base is None:
                base = model.default_parameters
        else:
            gprior = GaussianPrior.from_population(prior, names, seed=config.seed)
            if base is None:
                base = typical_parameters(prior, seed=config.seed)
        obs, doses = cls._harmonized(model, observations, inputs)
        if obs.empty:
            raise InputError("A twin needs at least one observation of a model observable to calibrate on.")
        subjects = obs["subject_id"].unique()
        if len(subjects) > 1:
            raise InputError(
                f"A twin is one patient's; the observations hold {len(subjects)} subjects {list(subjects)[:5]}."
            )
        first = min(obs["time"].min(), doses["time"].min() if not doses.empty else obs["time"].min())
        start = pd.Timestamp(origin) if origin is not None else pd.Timestamp(first).floor("min")
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        pmap = ParameterMap(model, names, np.asarray(base, dtype=np.float64))
        twin = cls(
            model,
            pmap,
            gprior,
            Ensemble(np.zeros((0, len(names))), np.zeros((0, len(model.states))), 0.0),
            start,
            config,
            twin_id or f"twin-{uuid.uuid4().hex[:8]}",
            str(subjects[0]),
        )
        twin._calibrate(obs, doses, method, dict(calibrator or {}), amortized)
        return twin

    @staticmethod
    def _harmonized(
        model: Model, observations: pd.DataFrame, doses: pd.DataFrame | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        units = {o.name: o.unit for o in model.observables}
        result = harmonize(observations, doses if doses is not None else empty_doses(), units=units)
        if result.rejected:
            r = result.rejected[0]
            raise InputError(
                f"{len(result.rejected)} record(s) rejected ({r.source} {r.record}: {r.reason}); nothing was changed."
            )
        obs = result.observations[result.observations["variable"].isin(units)]
        return obs.reset_index(drop=True), result.doses

    def _calibrate(
        self, obs: pd.DataFrame, doses: pd.DataFrame, method: str, settings: dict[str, Any], amortized: Any
    ) -> None:
        n = self.config.members
        inputs = inputs_from_doses(self.model, doses, self.origin)
        if amortized is not None:
            self._check_amortized(amortized, obs, inputs, method)
        elif method == "npe":
            raise InputError("method='npe' needs amortized=... (a trained AmortizedPosterior for this model).")
        if method == "enkf":
            theta = self.prior.sample(n, self._rng)
            states = _initial_states(self.model, self.pmap.full_batch(theta))
            self.ensemble = Ensemble(theta, states, 0.0)
            self.calibration = {"method": "enkf", "prior_members": n}
            self.version = 1
            self._assimilate(obs, doses, record=True, detect=False)
            return
        if method not in ("nuts", "svi", "npe"):
            raise InputError(f"method must be 'nuts', 'svi', 'enkf' or 'npe'; got {method!r}.")
        times = self._model_time(obs["time"])
        if method == "npe":
            posterior = amortized.posterior(times, obs["value"].to_numpy(), n=n, seed=self.config.seed)
            self._start_from(posterior, obs, doses, inputs, times, "npe")
            return
        problem = CalibrationProblem(
            self.model,
            self.pmap,
            times,
            tuple(obs["variable"]),
            obs["value"].to_numpy(),
            inputs,
            noise={k: self.config.noise_model(k) for k in set(obs["variable"])},
            settings=self.config.settings,
        )
        calibrator = Calibrator(self.prior, method=method, seed=self.config.seed, **settings)  # type: ignore[arg-type]
        start = None
        if amortized is not None and method == "nuts":
            start = amortized.posterior(times, obs["value"].to_numpy(), n=calibrator.num_chains, seed=1).draws()
        self._start_from(calibrator.fit(problem, init=start).posterior, obs, doses, inputs, times, method)

    def _check_amortized(self, amortized: Any, obs: pd.DataFrame, plan: Inputs, method: str) -> None:
        """An amortized posterior is valid only for its model, observable and treatment."""
        design = amortized.design
        if method not in ("npe", "nuts"):
            raise InputError(f"An amortized posterior seeds method 'npe' or 'nuts'; got method={method!r}.")
        if set(obs["variable"]) != {design.observable}:
            raise InputError(
                f"The amortized posterior conditions on '{design.observable}' only; the observations hold "
                f"{sorted(set(obs['variable']))}. Use method='nuts' without it for other data."
            )
        if repr(plan) != repr(design.inputs):
            raise InputError(
                "The amortized posterior was trained under another treatment than this patient's doses "
                f"({design.inputs!r} vs {plan!r}); train one for this plan or use method='nuts'."
            )

    def _start_from(
        self, posterior: Any, obs: pd.DataFrame, doses: pd.DataFrame, inputs: Inputs, times: np.ndarray, method: str
    ) -> None:
        """Members drawn from a posterior, propagated to the last observation."""
        n = self.config.members
        draws = posterior.draws()
        theta = draws[self._rng.choice(draws.shape[0], size=n, replace=draws.shape[0] < n)]
        states = _initial_states(self.model, self.pmap.full_batch(theta))
        end = float(times.max())
        ens = Ensemble(theta, states, 0.0)
        if end > 0:
            _, ens = propagate(self.model, self.pmap, ens, inputs, np.array([end]), self.config.settings)
        self.ensemble = ens
        self.calibration = {"method": method, **posterior.diagnostics(), "summary": posterior.summary().to_dict("list")}
        self.observations = obs.copy()
        self.doses = doses.copy()
        self.version = 1
        self.snapshots = [(self.version, self.ensemble.to_bytes())]

    # --- time ----------------------------------------------------------------
    def _model_time(self, times: Any) -> np.ndarray:
        return to_model_time(times, self.origin, self.model.time_unit)

    @property
    def now(self) -> pd.Timestamp:
        return pd.Timestamp(to_timestamps([self.ensemble.time], self.origin, self.model.time_unit)[0])

    def _window_inputs(self, doses: pd.DataFrame, start: float) -> Inputs:
        if doses.empty:
            return Inputs()
        t = self._model_time(doses["time"])
        ends = t + doses["duration"].to_numpy(dtype=float) * 60.0 / unit_seconds(self.model.time_unit)
        keep = ends > start - 1e-9
        return inputs_from_doses(self.model, doses[keep], self.origin, shift=start)

    # --- synchronization -----------------------------------------------------
    def sync(self, observations: pd.DataFrame, inputs: pd.DataFrame | None = None) -> SyncReport:
        """Assimilate new observations (and record new doses): one new twin version.

        Observations at or before the twin's current time cannot be assimilated by a
        filter; they are logged and counted as ``late``. Exact duplicates of logged
        observations are ignored.
        """
        obs, doses = self._harmonized(self.model, observations, inputs)
        obs = obs[obs["subject_id"] == self.subject_id] if not obs.empty else obs
        key = ["time", "variable", "value"]
        if not self.observations.empty and not obs.empty:
            seen = obs.merge(self.observations[key].drop_duplicates(), on=key, how="left", indicator=True)
            obs = obs[(seen["_merge"] == "left_only").to_numpy()]
        if not doses.empty and not self.doses.empty:
            seen = doses.merge(
                self.doses[["time", "input", "amount"]].drop_duplicates(),
                on=["time", "input", "amount"],
                how="left",
                indicator=True,
            )
            doses = doses[(seen["_merge"] == "left_only").to_numpy()]
        self.version += 1
        return self._assimilate(obs, doses, record=True)

    def _assimilate(self, obs: pd.DataFrame, doses: pd.DataFrame, *, record: bool, detect: bool = True) -> SyncReport:
        if record and not doses.empty:
            self.doses = doses.copy() if self.doses.empty else pd.concat([self.doses, doses], ignore_index=True)
        times = self._model_time(obs["time"]) if not obs.empty else np.zeros(0)
        late = times <= self.ensemble.time + 1e-9
        fresh = obs[~late]
        if record and not obs.empty:
            self.observations = (
                obs.copy() if self.observations.empty else pd.concat([self.observations, obs], ignore_index=True)
            )
        scored = self._score(fresh) if record else []
        if fresh.empty:
            report = SyncReport(self.version, 0, int(late.sum()), {}, False, False, scored)
            self._snapshot()
            return report
        t_new = times[~late]
        span = self._default_window()
        drift = recalibrated = False
        last: dict[str, Any] = {}
        edges = np.arange(self.ensemble.time, t_new.max() + span, span)[1:]
        lo = self.ensemble.time
        for hi in edges:
            inside = (t_new > lo + 1e-9) & (t_new <= hi + 1e-9)
            if inside.any():
                last = self._update(fresh[inside], t_new[inside])
                if record and detect and self.detector.observe_dict(last):
                    drift = True
                    self.drift_events.append({"version": self.version, "time": str(self.now), **last})
                    if self.config.recalibration == "reassimilate":
                        self._recalibrate()
                        recalibrated = True
            lo = hi
        report = SyncReport(self.version, int((~late).sum()), int(late.sum()), last, drift, recalibrated, scored)
        self._snapshot()
        return report

    def _default_window(self) -> float:
        return 60.0 * 60.0 / unit_seconds(self.model.time_unit) if self.model.time_unit in ("min", "s") else 7.0

    def _update(self, obs: pd.DataFrame, times: np.ndarray) -> dict[str, Any]:
        """Propagate to the last of ``times`` and assimilate ``obs`` there."""
        order = np.argsort(times, kind="stable")
        obs, times = obs.iloc[order], times[order]
        inputs = self._window_inputs(self.doses, self.ensemble.time)
        t_unique = np.unique(times)
        predicted_all, forecast_ens = propagate(
            self.model, self.pmap, self.ensemble, inputs, t_unique, self.config.settings
        )
        cols = [self.model.observable_names.index(v) for v in obs["variable"]]
        rows = np.searchsorted(t_unique, times)
        predicted = predicted_all[:, rows, cols]
        good = np.all(np.isfinite(predicted), axis=1)
        if good.sum() < max(3, forecast_ens.size // 2):
            raise InputError(
                f"Twin {self.id}: {int((~good).sum())} of {forecast_ens.size} members failed to integrate; "
                "check the inputs (units, rates)."
            )
        if not good.all():  # failed members restart from a good one
            donors = self._rng.choice(np.flatnonzero(good), size=int((~good).sum()))
            theta, states = forecast_ens.theta.copy(), forecast_ens.states.copy()
            theta[~good], states[~good], predicted[~good] = theta[donors], states[donors], predicted[donors]
            forecast_ens = Ensemble(theta, states, forecast_ens.time)
        y = obs["value"].to_numpy(dtype=float)
        r = np.array(
            [
                self.config.noise_model(v).sd(float(m)) ** 2
                for v, m in zip(obs["variable"], predicted.mean(axis=0), strict=True)
            ]
        )
        inn = innovation(predicted, y, r)
        nonneg = np.array([s.nonnegative for s in self.model.states])
        analysed = assimilator(self.config.assimilation).update(forecast_ens, predicted, y, r, nonneg, self._rng)
        walk = self._rng.standard_normal(analysed.theta.shape) * self.config.param_walk_sd
        self.ensemble = Ensemble(analysed.theta + walk, analysed.states, analysed.time)
        entry = {"version": self.version, "time": float(self.ensemble.time), **inn.to_dict()}
        self.innovations.append(entry)
        return entry

    def _snapshot(self) -> None:
        self.snapshots = ([*self.snapshots, (self.version, self.ensemble.to_bytes())])[-SNAPSHOTS:]

    def _recalibrate(self) -> None:
        """Restart from the ensemble of ``recalibration_lookback`` syncs ago with widened
        parameters and re-assimilate everything observed since (the recent window)."""
        back = [ens for v, ens in self.snapshots if v <= self.version - self.config.recalibration_lookback]
        start = Ensemble.from_bytes(back[-1]) if back else Ensemble.from_bytes(self.snapshots[0][1])
        mean = start.theta.mean(axis=0)
        theta = (
            mean
            + (start.theta - mean)
            + self._rng.standard_normal(start.theta.shape) * (self.config.recalibration_spread * self.prior.sd)
        )
        target = self.ensemble.time
        self.ensemble = Ensemble(theta, start.states, start.time)
        replay = self.observations[
            (self._model_time(self.observations["time"]) > start.time + 1e-9)
            & (self._model_time(self.observations["time"]) <= target + 1e-9)
        ]
        self.detector.reset()
        self._assimilate(replay, empty_doses(), record=False)
        self.drift_events[-1]["recalibrated_from_time"] = float(start.time)

    # --- forecasts and comparisons ---------------------------------------------
    def _future_inputs(self, inputs: Inputs | pd.DataFrame | None) -> Inputs:
        if isinstance(inputs, Inputs):
            return inputs
        doses = (
            self.doses
            if inputs is None
            else self._harmonized(self.model, pd.DataFrame(columns=list(OBSERVATION_COLUMNS)), inputs)[1]
        )
        return self._window_inputs(doses, self.ensemble.time)

    def _horizon(self, hours: float, every: float | None) -> np.ndarray:
        length = hours * 3600.0 / unit_seconds(self.model.time_unit)
        if length <= 0:
            raise InputError(f"The forecast horizon must be > 0 hours; got {hours}.")
        step = every or (5.0 if self.model.time_unit == "min" else length / 96.0)
        return self.ensemble.time + np.arange(step, length + step / 2, step)

    def _members(self, inputs: Inputs, times: np.ndarray) -> np.ndarray:
        members, _ = propagate(self.model, self.pmap, self.ensemble, inputs, times, self.config.settings)
        return members

    def forecast(
        self,
        hours: float = 24.0,
        inputs: Inputs | pd.DataFrame | None = None,
        *,
        every: float | None = None,
        store: bool = True,
    ) -> Forecast:
        """Ensemble forecast of every observable over ``hours``.

        Arguments:
            inputs: future inputs, as ``Inputs`` relative to now (model time) or a dose
                table with UTC times; default: the doses already recorded for the future.
            every: output spacing in model time units (default 5 min, or 96 points).
            store: keep it with the twin, to be scored as observations arrive.
        """
        times = self._horizon(hours, every)
        members = self._members(self._future_inputs(inputs), times)
        noise = np.stack(
            [self.config.noise_model(o).sd(members[:, :, i]) for i, o in enumerate(self.model.observable_names)],
            axis=-1,
        )
        predictive = members + noise * self._rng.standard_normal(members.shape)
        fc = Forecast(
            self.id,
            self.version,
            to_timestamps(times, self.origin, self.model.time_unit),
            self.model.observable_names,
            tuple(o.unit for o in self.model.observables),
            members,
            predictive,
            id=f"{self.id}-v{self.version}-f{len(self.forecasts) + 1}",
            noise={
                o: (self.config.noise_model(o).additive, self.config.noise_model(o).proportional)
                for o in self.model.observable_names
            },
        )
        if store:
            self.forecasts.append(fc)
        return fc

    def _score(self, obs: pd.DataFrame) -> list[str]:
        scored = []
        for fc in self.forecasts:
            inside = obs[(obs["time"] >= fc.times[0]) & (obs["time"] <= fc.times[-1])]
            if not inside.empty:
                fc.score(inside)
                scored.append(fc.id)
        return scored

    def scores(self) -> pd.DataFrame:
        """Scores of every stored forecast that has met observations."""
        rows = [
            {"forecast": f.id, "version": f.version, **{k: v for k, v in f.scores.items() if k != "ranks"}}
            for f in self.forecasts
            if f.scores.get("n")
        ]
        return pd.DataFrame(rows)

    def compare(
        self,
        arms: Mapping[str, Inputs | pd.DataFrame],
        endpoint_name: str = "time_in_range",
        *,
        hours: float = 24.0,
        every: float | None = None,
        better: str | None = None,
    ) -> dict[str, Any]:
        """What-if comparison of treatment arms on the same ensemble (paired members).

        Returns per-arm endpoint summaries (mean, 5/50/95 % quantiles), the paired
        difference of the first two arms, P(first arm better than second) and the ensemble size.
        """
        if len(arms) < 2:
            raise InputError(f"compare needs at least two arms; got {list(arms)}.")
        units = {o.name: o.unit for o in self.model.observables}
        ep = endpoint(endpoint_name, units, better)
        times = self._horizon(hours, every)
        o = self.model.observable_names.index(ep.observable)
        values = {}
        for name, plan in arms.items():
            members = self._members(self._future_inputs(plan), times)
            values[name] = ep.fn(times - self.ensemble.time, members[:, :, o])
        names = list(arms)
        a, b = values[names[0]], values[names[1]]
        ok = np.isfinite(a) & np.isfinite(b)
        diff = a[ok] - b[ok]
        better_a = diff > 0 if ep.better == "higher" else diff < 0

        def summary(v: np.ndarray) -> dict[str, float]:
            q = np.nanquantile(v, [0.05, 0.5, 0.95])
            return {"mean": float(np.nanmean(v)), "q05": float(q[0]), "q50": float(q[1]), "q95": float(q[2])}

        return {
            "endpoint": ep.name,
            "unit": ep.unit,
            "better": ep.better,
            "hours": hours,
            "arms": {k: summary(v) for k, v in values.items()},
            "difference": {"arms": f"{names[0]} - {names[1]}", **summary(diff)},
            "p_first_better": float(better_a.mean()) if diff.size else float("nan"),
            "ensemble_size": int(ok.sum()),
            "version": self.version,
            "values": {k: v.tolist() for k, v in values.items()},
        }

    # --- persistence -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the twin (JSON metadata + binary blobs)."""

        def parquet(frame: pd.DataFrame) -> bytes:
            buffer = io.BytesIO()
            frame.reset_index(drop=True).to_parquet(buffer)
            return buffer.getvalue()

        meta = {
            "id": self.id,
            "subject_id": self.subject_id,
            "model_id": self.model.id,
            "model_version": self.model.version,
            "origin": self.origin.isoformat(),
            "version": self.version,
            "fit": list(self.pmap.names),
            "base": self.pmap.base.tolist(),
            "prior": self.prior.to_dict(),
            "config": self.config.__dict__,
            "innovations": self.innovations,
            "drift_events": self.drift_events,
            "calibration": self.calibration,
            "detector": self.detector.to_dict(),
            "snapshot_versions": [v for v, _ in self.snapshots],
            "forecasts": [{"id": f.id, "version": f.version, "scores": f.scores} for f in self.forecasts],
        }
        return {
            "meta": json.loads(json.dumps(meta, default=float)),
            "ensemble": self.ensemble.to_bytes(),
            "observations": parquet(self.observations.astype({"value": float})),
            "doses": parquet(self.doses),
            "snapshots": [blob for _, blob in self.snapshots],
            "forecasts": [f.to_bytes() for f in self.forecasts],
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> PatientTwin:
        meta = state["meta"]
        model = get_model(meta["model_id"])
        pmap = ParameterMap(model, tuple(meta["fit"]), np.asarray(meta["base"]))
        config = TwinConfig(**meta["config"])
        twin = cls(
            model,
            pmap,
            GaussianPrior.from_dict(meta["prior"]),
            Ensemble.from_bytes(state["ensemble"]),
            pd.Timestamp(meta["origin"]),
            config,
            meta["id"],
            meta["subject_id"],
        )
        twin.version = int(meta["version"])
        twin.observations = pd.read_parquet(io.BytesIO(state["observations"]))
        twin.doses = pd.read_parquet(io.BytesIO(state["doses"]))
        if twin.doses.empty:
            twin.doses = empty_doses()
        twin.innovations = list(meta["innovations"])
        twin.drift_events = list(meta["drift_events"])
        twin.calibration = dict(meta["calibration"])
        twin.detector = DriftDetector.from_dict(meta["detector"])
        twin.snapshots = list(zip(meta["snapshot_versions"], state["snapshots"], strict=True))
        units = tuple(o.unit for o in model.observables)
        twin.forecasts = [
            Forecast.from_bytes(
                blob,
                twin_id=twin.id,
                version=f["version"],
                observables=model.observable_names,
                units=units,
                id=f["id"],
                scores=f["scores"],
            )
            for f, blob in zip(meta["forecasts"], state["forecasts"], strict=True)
        ]
        twin._rng = np.random.default_rng([config.seed, twin.version])
        return twin


__all__ = ["DOSE_COLUMNS", "PatientTwin", "SyncReport", "TwinConfig"]
