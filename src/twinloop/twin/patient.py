"""``PatientTwin``: one patient's calibrated, synchronized, forecasting model.

A twin holds an ensemble (fitted parameters on their scale + current state per member), the
log of every observation and dose it has seen, its innovation history, drift events
and the forecasts it has issued with their scores. Times in its tables are UTC
timestamps; internally they are model time from the twin's ``origin``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from twinloop._paths import check_name
from twinloop.calibrate.bayes import Calibrator
from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import CalibrationProblem, ParameterMap
from twinloop.connect.batch import Rows, batch_rows, harmonize_batch
from twinloop.connect.ingest import harmonize
from twinloop.connect.schema import DOSE_COLUMNS, OBSERVATION_COLUMNS, empty_doses, empty_observations
from twinloop.connect.timebase import (
    clock_seconds,
    inputs_from_doses,
    inputs_from_rows,
    ns_to_model_time,
    to_model_time,
    to_timestamps,
    unit_seconds,
)
from twinloop.errors import CalibrationError, InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.models.registry import get as get_model
from twinloop.twin.assimilation import systematic_resample
from twinloop.twin.compare import Comparison, compare_arms
from twinloop.twin.config import TwinConfig
from twinloop.twin.consistency import MODEL_ERROR_WARNING as MODEL_ERROR_WARNING
from twinloop.twin.consistency import TwinConsistencyWarning as TwinConsistencyWarning
from twinloop.twin.consistency import adopt_model_error, check_fit, fit_innovation
from twinloop.twin.drift import DriftDetector
from twinloop.twin.ensemble import Ensemble, initial_states, propagate, solve, solver_record, start_states
from twinloop.twin.forecast import Forecast, horizon_steps, predictive_draws
from twinloop.twin.identify import Identification, IdentifySettings, identify
from twinloop.twin.log import RecordLog
from twinloop.twin.priors import check_known, condition_on_covariates, population_prior, typical_parameters
from twinloop.twin.screen import screen_members
from twinloop.twin.state import pack, restore
from twinloop.twin.sync import SyncReport, apply, assimilate, record, snapshot, within_box

METHODS = ("auto", "laplace", "nuts", "svi", "enkf", "npe", "prior")
DENSE = 20  # observations per fitted parameter above which "auto" identifies by Laplace


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
        self.snapshots: list[tuple[int, Ensemble]] = []  # serialized only when the twin is saved
        self.calibration: dict[str, Any] = {}
        self.start_states: np.ndarray | None = None  # members' states at the origin, if given (create's y0)
        self.detector = DriftDetector(**config.drift)
        self.rng = np.random.default_rng(config.seed)

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
        known: Mapping[str, float] | None = None,
        method: Literal["auto", "laplace", "nuts", "svi", "enkf", "npe", "prior"] = "auto",
        config: TwinConfig | None = None,
        twin_id: str | None = None,
        origin: pd.Timestamp | str | None = None,
        calibrator: Mapping[str, Any] | None = None,
        amortized: Any | None = None,
        identify_settings: IdentifySettings | None = None,
        progress: Callable[[str], None] | None = None,
        y0: np.ndarray | None = None,
    ) -> PatientTwin:
        """Calibrate a twin on a patient's data and set up its ensemble.

        Arguments:
            model: the model or its registry id.
            observations: canonical observation table of one patient (UTC times).
            inputs: canonical dose table over the same span (insulin, meals, drugs).
            prior: a ``Population`` (moment-matched to a log-normal prior) or a ``GaussianPrior``.
            fit: the parameters to estimate (default: the model's declared ``identifiable`` set).
                They are estimated on a bounded scale: no estimate leaves the model's bounds.
                ``fit=()`` estimates none: state-only assimilation (method ``"enkf"`` or
                ``"prior"``; no prior needed), usually with ``y0`` to spread the states.
            base: the values of the parameters not fitted (default: the population's typical
                patient given the ``known`` values).
            known: parameter values known for this patient, e.g. ``{"BW": 62.0}`` (kg); they
                are not fitted, and the prior and base are the population's given them.
            method: ``"auto"`` (default): ``"laplace"`` for a dense record (at least
                ``DENSE`` observations per fitted parameter, e.g. CGM), ``"nuts"`` otherwise
                (a few scans: the posterior is far from Gaussian; or with an ``amortized``
                posterior, whose draws start the chains).
                ``"laplace"``: multi-start MAP over the whole record with a
                Laplace posterior and an estimate of the model error
                (:mod:`twinloop.twin.identify`), seconds to a minute for a week of CGM;
                ``"nuts"`` or ``"svi"`` calibrate on all the data, then the
                posterior draws become the ensemble; ``"enkf"`` draws the ensemble from the
                prior and assimilates the data window by window (fast, approximate);
                ``"npe"`` draws the ensemble from the ``amortized`` posterior of all the data
                (milliseconds), after which syncs assimilate new data with the EnKF;
                ``"prior"`` ignores the data: the prior-only baseline a twin must beat.
            amortized: a trained :class:`~twinloop.calibrate.AmortizedPosterior` for this
                model, parameters and treatment; the prior, fitted parameters and base values
                are then its own (``prior``, ``fit`` and ``base`` are not used). With ``"npe"``
                it gives the ensemble; with ``"nuts"`` its draws start the chains (pass a
                shorter ``num_warmup``).
            config: :class:`TwinConfig`; calibrator: settings passed to ``Calibrator``.
            origin: time zero (default: the first observation or dose, to the minute).
            identify_settings: starts and iterations of ``"laplace"``.
            progress: called with a line of text as the identification advances.
            y0: the members' states at the origin instead of the model's ``initial_state``:
                one state vector, or draws ``(m, n_states)`` from a distribution of initial
                states (each member takes one, drawn with replacement when ``m`` is smaller
                than the ensemble).
        """
        model = get_model(model) if isinstance(model, str) else model
        config = config or TwinConfig()
        if method not in METHODS:
            raise InputError(f"method must be one of {list(METHODS)}; got {method!r}.")
        if twin_id is not None:
            check_name("twin_id", twin_id)
        names = tuple(
            fit if fit is not None else (prior.names if isinstance(prior, GaussianPrior) else model.identifiable)
        )
        if not names and fit is None:
            raise InputError(
                f"Say which parameters of '{model.id}' to fit (fit=...); it declares no identifiable set. "
                "Pass fit=() to estimate the states only."
            )
        known = dict(known or {})
        covariates = {k: known.pop(k) for k in list(known) if k not in model.parameter_names}
        known = check_known(model, known, names)
        if covariates:
            if prior is None or isinstance(prior, GaussianPrior):
                raise InputError(
                    f"Known covariates {sorted(covariates)} need a Population prior to condition; "
                    "pass prior=Population... or give only model parameters."
                )
            prior = condition_on_covariates(prior, covariates, seed=config.seed)
        # a prior built here from a population lives on the bounded scale; a given
        # GaussianPrior (or an amortized posterior's) is on the log scale
        bounded = amortized is None and not isinstance(prior, GaussianPrior)
        if amortized is not None:
            if amortized.model.id != model.id or amortized.model.version != model.version:
                raise InputError(
                    f"The amortized posterior was trained on {amortized.model.id} {amortized.model.version}; "
                    f"this twin's model is {model.id} {model.version}."
                )
            prior, base, names = amortized.prior, amortized.parameters.base, tuple(amortized.prior.names)
        if not names:  # state-only: nothing to calibrate, the other parameters at their base
            gprior = GaussianPrior((), np.zeros(0), np.zeros((0, 0)))
            if base is None and (prior is None or isinstance(prior, GaussianPrior)):
                base = model.default_parameters
            elif base is None:
                base = typical_parameters(prior, seed=config.seed, known=known)
        elif prior is None:
            raise InputError("A twin needs a prior (a Population or a GaussianPrior) or an amortized posterior.")
        elif isinstance(prior, GaussianPrior):
            if tuple(prior.names) != names:
                raise InputError(f"The prior is over {list(prior.names)}; fit= names {list(names)}. Make them agree.")
            gprior = prior
            if base is None:
                base = model.default_parameters
        elif amortized is None:
            if base is None:
                base = typical_parameters(prior, seed=config.seed, known=known)
            draft = ParameterMap(model, names, np.asarray(base, dtype=np.float64), bounded=bounded)
            gprior = population_prior(model, prior, draft, known, config.seed)
        base = np.asarray(base, dtype=np.float64).copy()
        for name, value in known.items():
            base[model.parameter_names.index(name)] = value
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
        pmap = ParameterMap(model, names, base, bounded=bounded)
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
        twin.start_states = start_states(model, y0)
        twin._calibrate(obs, doses, method, dict(calibrator or {}), amortized, identify_settings, progress)
        return twin

    @staticmethod
    def _harmonized(
        model: Model, observations: pd.DataFrame, doses: pd.DataFrame | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        units = {o.name: o.unit for o in model.observables}
        batch = harmonize_batch(observations, doses, units)
        if batch is not None:  # a clean batch: the same tables, without pandas' overhead
            return batch
        return PatientTwin._fully_harmonized(model, observations, doses)

    @staticmethod
    def _fully_harmonized(
        model: Model, observations: pd.DataFrame, doses: pd.DataFrame | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """:func:`~twinloop.connect.ingest.harmonize`; any rejected record aborts."""
        units = {o.name: o.unit for o in model.observables}
        result = harmonize(observations, doses if doses is not None else empty_doses(), units=units)
        if result.rejected:
            r = result.rejected[0]
            raise InputError(
                f"{len(result.rejected)} record(s) rejected ({r.source} {r.record}: {r.reason}); nothing was changed."
            )
        obs = result.observations[result.observations["variable"].isin(units)]
        return obs.reset_index(drop=True), result.doses

    def _rows(self, observations: pd.DataFrame, doses: pd.DataFrame | None) -> tuple[Rows, Rows]:
        """A sync's new rows, harmonized (as :meth:`_harmonized`), as columns."""
        rows = batch_rows(observations, doses, {o.name: o.unit for o in self.model.observables})
        if rows is not None:  # a clean batch: no table built
            return rows
        obs, dose = self._fully_harmonized(self.model, observations, doses)
        return Rows.from_frame(obs, OBSERVATION_COLUMNS), Rows.from_frame(dose, DOSE_COLUMNS)

    def _calibrate(
        self,
        obs: pd.DataFrame,
        doses: pd.DataFrame,
        method: str,
        settings: dict[str, Any],
        amortized: Any,
        identify_settings: IdentifySettings | None,
        progress: Callable[[str], None] | None,
    ) -> None:
        n = self.config.members
        inputs = inputs_from_doses(self.model, doses, self.origin, clock=self.clock)
        if not self.pmap.names:
            method = "enkf" if method == "auto" else method
            if method not in ("enkf", "prior"):
                raise InputError(
                    f"method={method!r} calibrates parameters, and fit=() names none; use method='enkf' "
                    "(assimilate the record) or 'prior' for state-only assimilation."
                )
        if method == "auto":
            dense = len(obs) >= DENSE * len(self.pmap.names)
            method = "laplace" if dense and amortized is None else "nuts"
        if amortized is not None:
            self._check_amortized(amortized, obs, inputs, method)
        elif method == "npe":
            raise InputError("method='npe' needs amortized=... (a trained AmortizedPosterior for this model).")
        if method == "enkf":
            theta = self.prior.sample(n, self.rng)
            states = self._initial_states(theta)
            self.ensemble = within_box(self, Ensemble(theta, states, 0.0))
            self.calibration = {"method": "enkf", "prior_members": n}
            self.version = 1
            new = Rows.from_frame(obs, OBSERVATION_COLUMNS)
            record(self, new, Rows.from_frame(doses, DOSE_COLUMNS), self.model_time_ns(new.ns))
            assimilate(self, self.obs_log.readings(0.0), detect=False)
            snapshot(self)
            return
        times = self.model_time(obs["time"])
        if method == "npe":
            posterior = amortized.posterior(times, obs["value"].to_numpy(), n=n, seed=self.config.seed)
            self._start_from(posterior.draws(), posterior.diagnostics(), obs, doses, inputs, times)
            return
        problem = CalibrationProblem(
            self.model,
            self.pmap,
            times,
            tuple(obs["variable"]),
            obs["value"].to_numpy(),
            inputs,
            noise={k: self.config.noise_model(k, self.model) for k in set(obs["variable"])},
            settings=self.config.settings,
        )
        if method == "prior":
            self._start_from(self.prior.sample(4 * n, self.rng), {"method": "prior"}, obs, doses, inputs, times)
            return
        if method == "laplace":
            found = identify(problem, self.prior, identify_settings, progress)
            self.config = adopt_model_error(self.config, found.error_scale, self.model)
            diagnostics = found.diagnostics()
            self._start_from(found.draws(n, self.rng), diagnostics, obs, doses, inputs, times, found)
            check_fit(self, self.calibration)
            return
        settings = {"model_error": self.config.model_error, **settings}
        calibrator = Calibrator(self.prior, method=method, seed=self.config.seed, **settings)  # type: ignore[arg-type]
        start = None
        if amortized is not None and method == "nuts":
            start = amortized.posterior(times, obs["value"].to_numpy(), n=calibrator.num_chains, seed=1).draws()
        posterior = calibrator.fit(problem, init=start).posterior
        self.config = adopt_model_error(self.config, posterior.error_scale(), self.model)
        self._start_from(posterior.draws(), posterior.diagnostics(), obs, doses, inputs, times)
        self.calibration["fit_innovation"] = fit_innovation(self, obs, inputs, times)
        check_fit(self, self.calibration)

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
        self,
        draws: np.ndarray,
        diagnostics: dict[str, Any],
        obs: pd.DataFrame,
        doses: pd.DataFrame,
        inputs: Inputs,
        times: np.ndarray,
        found: Identification | None = None,
    ) -> None:
        """Members drawn from posterior draws, propagated to the last observation (and, for
        a Laplace posterior ``found``, screened on the record on the way)."""
        n = self.config.members
        draws = draws[self.pmap.inside_box(draws)]
        if draws.shape[0] == 0:
            raise CalibrationError(
                f"Twin {self.id}: no posterior draw lies inside the parameter bounds of '{self.model.id}'."
            )
        theta = draws[self.rng.choice(draws.shape[0], size=n, replace=draws.shape[0] < n)]
        states = self._initial_states(theta)
        end = float(times.max())
        ens = Ensemble(theta, states, 0.0)
        if found is not None and end > 0:
            at = np.unique(times)  # its last is ``end``, the new ensemble time
            predicted, ens = propagate(self.model, self.pmap, ens, inputs, at, self.config.settings)
            cols = [self.model.observable_names.index(v) for v in obs["variable"]]
            keep, report = screen_members(found, theta, predicted[:, np.searchsorted(at, times), cols], self.rng)
            ens = Ensemble(ens.theta[keep], ens.states[keep], ens.time)
            diagnostics = {**diagnostics, "screen": report}
        elif end > 0:
            _, ens = propagate(self.model, self.pmap, ens, inputs, np.array([end]), self.config.settings)
        self.ensemble = ens
        self.calibration = {"summary": self.parameter_summary(ens.theta), **diagnostics}
        self.observations = obs.copy()
        self.doses = doses.copy()
        self.version = 1
        snapshot(self, first=True)

    def _initial_states(self, theta: np.ndarray) -> np.ndarray:
        """The members' states at the origin: drawn from ``start_states`` when given, else
        the model's rule for each member's parameters."""
        if self.start_states is None:
            return initial_states(self.model, self.pmap.full_batch(theta))
        m = self.start_states.shape[0]
        rows = (
            np.arange(m) if m == theta.shape[0] else self.rng.choice(m, size=theta.shape[0], replace=m < theta.shape[0])
        )
        return self.start_states[rows].copy()

    def parameter_summary(self, theta: np.ndarray | None = None) -> dict[str, list[float]]:
        """Median and 5-95 % quantiles of each fitted parameter over the members, on its own scale."""
        values = self.pmap.values(self.ensemble.theta if theta is None else theta)
        q = np.quantile(values, [0.05, 0.5, 0.95], axis=0)
        return {"parameter": list(self.pmap.names), "q05": q[0].tolist(), "median": q[1].tolist(), "q95": q[2].tolist()}

    def _rng_for(self, *tags: int) -> np.random.Generator:
        """The random stream of this version (and of ``tags``): an in-memory twin and one
        reloaded from the registry draw the same numbers."""
        return np.random.default_rng([self.config.seed, self.version, *tags])

    # --- the log ---------------------------------------------------------------
    @property
    def observations(self) -> pd.DataFrame:
        """Every observation logged, in the order it arrived."""
        return self.obs_log.frame

    @observations.setter
    def observations(self, frame: pd.DataFrame) -> None:
        self.obs_log = RecordLog.observations(frame, self.model_time)

    @property
    def doses(self) -> pd.DataFrame:
        """Every dose logged, in the order it arrived."""
        return self.dose_log.frame

    @doses.setter
    def doses(self, frame: pd.DataFrame) -> None:
        self.dose_log = RecordLog.doses(frame, self.model_time, self.clock)

    # --- time ----------------------------------------------------------------
    @property
    def clock(self) -> float:
        """Seconds of clock time in one unit of model time (the config's ``clock_seconds``,
        the model's, or its time unit's; :class:`InputError` when none says)."""
        return clock_seconds(self.model, self.config.clock_seconds)

    def model_time(self, times: Any) -> np.ndarray:
        return to_model_time(times, self.origin, self.clock)

    def model_time_ns(self, ns: np.ndarray) -> np.ndarray:
        """:meth:`model_time` of UTC nanoseconds."""
        return ns_to_model_time(ns, self.origin, self.clock)

    @property
    def now(self) -> pd.Timestamp:
        return pd.Timestamp(to_timestamps([self.ensemble.time], self.origin, self.clock)[0])

    def window_inputs(self, doses: pd.DataFrame, start: float) -> Inputs:
        if doses.empty:
            return Inputs()
        t = self.model_time(doses["time"])
        ends = t + doses["duration"].to_numpy(dtype=float) * 60.0 / unit_seconds(self.clock)
        keep = ends > start - 1e-9
        return inputs_from_doses(self.model, doses[keep], self.origin, shift=start, clock=self.clock)

    def logged_inputs(self, start: float) -> Inputs:
        """The logged doses acting from model time ``start`` on, relative to it."""
        t, rows = self.dose_log.active(start)
        return inputs_from_rows(self.model, rows, t - start, clock=self.clock) if rows else Inputs()

    # --- synchronization -----------------------------------------------------
    def sync(self, observations: pd.DataFrame, inputs: pd.DataFrame | None = None) -> SyncReport:
        """Assimilate new observations (and record new doses): one new twin version.

        Observations at or before the twin's current time (a backfilled CGM, a sync that
        arrived out of order) are assimilated by rewinding to the latest kept ensemble
        before them and re-assimilating everything logged since; only those older than
        every kept ensemble are logged without assimilation and counted as ``late``.
        Exact duplicates of logged observations are ignored.
        """
        obs, doses = self._rows(observations, inputs)
        if len(obs):
            keep = (obs.data["subject_id"] == self.subject_id) & self.obs_log.fresh(obs)
            obs = obs if keep.all() else obs.take(keep)
        if len(doses) and len(self.dose_log):
            fresh = self.dose_log.fresh(doses)
            doses = doses if fresh.all() else doses.take(fresh)
        if not len(obs) and not len(doses):  # nothing new: no new version
            return SyncReport(self.version, 0, 0, {}, False, False, [], unchanged=True)
        return apply(self, obs, doses)

    # --- forecasts and comparisons ---------------------------------------------
    def future_inputs(self, inputs: Inputs | pd.DataFrame | None) -> Inputs:
        if isinstance(inputs, Inputs):
            return inputs
        if inputs is None:
            return self.logged_inputs(self.ensemble.time)
        doses = self._harmonized(self.model, pd.DataFrame(columns=list(OBSERVATION_COLUMNS)), inputs)[1]
        return self.window_inputs(doses, self.ensemble.time)

    def horizon(self, hours: float, every: float | None) -> np.ndarray:
        """Output times over ``hours`` (limits: :func:`~twinloop.twin.forecast.horizon_steps`)."""
        length, step = horizon_steps(self.model, self.ensemble.size, hours, every, clock=self.clock)
        return self.ensemble.time + np.arange(step, length + step / 2, step)

    def run_members(self, inputs: Inputs, times: np.ndarray) -> np.ndarray:
        """Every member's observables over ``times`` (a weighted particle ensemble is first
        resampled to equal weights, so quantiles over members are the weighted ones)."""
        return self.solved_members(inputs, times)[0]

    def solved_members(self, inputs: Inputs, times: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`run_members` and the solve's path and self-check
        (:func:`~twinloop.twin.ensemble.solver_record`)."""
        ens, settings = self.equally_weighted(), self.config.settings
        traj, idx, _ = solve(self.model, self.pmap, ens, inputs, times, settings, states=False)
        return traj.observables[:, idx, :], solver_record(traj)

    def equally_weighted(self) -> Ensemble:
        ens = self.ensemble
        if ens.weights is None:
            return ens
        index = systematic_resample(ens.weights, self._rng_for(2000))
        return Ensemble(ens.theta[index], ens.states[index], ens.time)

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
        times = self.horizon(hours, every)
        members, solver = self.solved_members(self.future_inputs(inputs), times)
        noise = np.stack(
            [
                self.config.noise_model(o, self.model).sd(members[:, :, i])
                for i, o in enumerate(self.model.observable_names)
            ],
            axis=-1,
        )
        lower = {o.name: 0.0 for o in self.model.observables if o.nonnegative}
        bounds = np.array([lower.get(o, -np.inf) for o in self.model.observable_names])
        predictive = predictive_draws(members, noise, bounds, self._rng_for(1000 + len(self.forecasts)))
        ranges = {o: self.config.noise_model(o, self.model).range for o in self.model.observable_names}
        for i, o in enumerate(self.model.observable_names):
            predictive[:, :, i] = np.clip(predictive[:, :, i], *ranges[o])
        fc = Forecast(
            self.id,
            self.version,
            to_timestamps(times, self.origin, self.clock),
            self.model.observable_names,
            tuple(o.unit for o in self.model.observables),
            members,
            predictive,
            id=f"{self.id}-v{self.version}-f{len(self.forecasts) + 1}",
            noise={
                o: (
                    self.config.noise_model(o, self.model).additive,
                    self.config.noise_model(o, self.model).proportional,
                )
                for o in self.model.observable_names
            },
            lower=lower,
            ranges={o: r for o, r in ranges.items() if np.isfinite(r).any()},
            solver=solver,
        )
        if store:
            self.forecasts.append(fc)
        return fc

    def score_forecasts(self, obs: pd.DataFrame | Rows) -> list[str]:
        """Score every stored forecast whose span holds some of ``obs``; returns their ids."""
        scored: list[str] = []
        if len(obs) == 0 or not self.forecasts:
            return scored
        rows = obs if isinstance(obs, Rows) else Rows.from_frame(obs, OBSERVATION_COLUMNS)
        first, last = int(rows.ns.min()), int(rows.ns.max())
        frame: pd.DataFrame | None = None
        for fc in self.forecasts:
            start, end = fc.span_ns
            if end < first or start > last:
                continue
            frame = rows.frame() if frame is None else frame  # built only for a forecast to score
            inside = frame[(frame["time"] >= fc.times[0]) & (frame["time"] <= fc.times[-1])]
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
    ) -> Comparison:
        """What-if comparison of treatment arms on the same ensemble (paired members):
        per-arm endpoint summaries, the paired difference of the first two arms and
        P(first arm better than second) (:class:`~twinloop.twin.compare.Comparison`)."""
        return compare_arms(self, arms, endpoint_name, hours=hours, every=every, better=better)

    # --- persistence -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the twin (JSON metadata + binary blobs)."""
        return pack(self)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> PatientTwin:
        return restore(cls, state)

    def reseed(self) -> None:
        """Take this version's random stream (after a sync or a reload)."""
        self.rng = self._rng_for()


__all__ = ["DOSE_COLUMNS", "PatientTwin", "SyncReport", "TwinConfig"]
