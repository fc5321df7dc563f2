"""Identification of a patient twin: multi-start MAP with a Laplace posterior and an
estimate of the model's error.

Every start of a fixed design (the prior mean and scrambled-Sobol points of the prior,
the same for every seed) runs Levenberg-Marquardt at once, as one batched solve of the
whole record with forward-mode Jacobians. The best start then gives:

* the **model error**: the scale of the residuals relative to the declared sensor
  noise, per observable. A twin is rarely its patient's exact model; its intervals
  use this scale, not the sensor's, so they stay honest under misspecification;
* the **Laplace posterior**: ``N(theta_map, H^-1)`` with ``H`` the Gauss-Newton
  information of the data plus the prior's precision. Residuals of a misspecified
  model are autocorrelated, which makes ``n`` readings worth fewer independent ones;
  the data's information is divided by the AR(1) variance-inflation factor
  ``(1 + rho) / (1 - rho)`` of the standardized residuals.

Readings at an instrument's limits (a CGM's "LOW" at 40 mg/dL, its "HIGH" at 400; the
``lower``/``upper`` of the observable's :class:`NoiseModel`) are censored: they enter by
the probability of a reading beyond the limit, not as values, and they do not count in
the model error's scale or the fit's RMSE.

Parameters live on the bounded scale of their :class:`ParameterMap` (``bounded=True``),
and a start whose derived parameters leave the model's box costs infinity, so no
estimate or member can leave it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import norm, qmc

from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import CalibrationProblem, ParameterMap
from twinloop.errors import CalibrationError
from twinloop.simulate.engine import cohort_observable_function

Progress = Callable[[str], None]
CONVERGED_WINDOW = 4  # Levenberg-Marquardt stops when this many steps changed nothing ...
CONVERGED_TOL = 1e-4  # ... that matters: relative to the best cost


@dataclass(frozen=True)
class IdentifySettings:
    """How a twin is identified: ``starts`` Levenberg-Marquardt starts, ``iterations``
    steps under the declared noise, then ``refine`` steps under the estimated model error.

    The fit's solves use the tolerances ``rtol``/``atol`` (looser than a forecast's: their
    error is far below any sensor's noise; on simglucose's adult#004 the final cost moved
    by 0.1 of 1,754 and each step took 1.7x less time than at 1e-5/1e-6), or the twin's
    own solver tolerances where those are looser."""

    starts: int = 8
    iterations: int = 20
    refine: int = 6
    max_step: float = 2.0
    rtol: float = 1e-4
    atol: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("starts", "iterations"):
            if int(getattr(self, name)) < 1:
                raise CalibrationError(f"IdentifySettings.{name} must be >= 1; got {getattr(self, name)}.")
        if self.refine < 0 or not self.max_step > 0:
            raise CalibrationError(f"refine must be >= 0 and max_step > 0; got {self.refine}, {self.max_step}.")
        if not (0 < self.rtol < 1 and self.atol > 0):
            raise CalibrationError(f"IdentifySettings needs 0 < rtol < 1 and atol > 0; got {self.rtol}, {self.atol}.")


@dataclass
class Identification:
    """The result: the MAP (bounded scale), its Laplace covariance and the model error."""

    pmap: ParameterMap
    theta_map: np.ndarray
    cov: np.ndarray
    prior: GaussianPrior
    error_scale: dict[str, float]
    autocorrelation: float
    rmse: dict[str, float]
    cost: float
    start_costs: np.ndarray
    wall_s: float
    history: list[float] = field(default_factory=list)
    censored: int = 0  # readings at the instrument's limits, fitted by their tail probability
    readings: np.ndarray | None = None  # (n_obs,) the values fitted, a censored one at its limit
    side: np.ndarray | None = None  # (n_obs,) -1 / +1 censored at the lower / upper limit, 0 measured
    sd: np.ndarray | None = None  # (n_obs,) the noise sd of the final fit (model error included)

    @property
    def variance_inflation(self) -> float:
        """The AR(1) factor ``(1 + rho) / (1 - rho)`` the data's information was divided by."""
        return (1.0 + self.autocorrelation) / (1.0 - self.autocorrelation)

    @property
    def information(self) -> dict[str, float]:
        """Per parameter, the share of its prior variance the data removed (0: not identified)."""
        share = 1.0 - np.diag(self.cov) / np.diag(self.prior.cov)
        return {n: float(s) for n, s in zip(self.pmap.names, share, strict=True)}

    def draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, k)`` members from the Laplace posterior, each inside the physiological box."""
        chol = np.linalg.cholesky(self.cov)
        kept: list[np.ndarray] = []
        for _ in range(50):
            z = self.theta_map + rng.standard_normal((2 * n, self.theta_map.size)) @ chol.T
            kept.append(z[self.pmap.inside_box(z)])
            if sum(len(k) for k in kept) >= n:
                return np.concatenate(kept)[:n]
        raise CalibrationError(
            f"Fewer than {n} of {100 * n} Laplace draws lie inside the parameter bounds of "
            f"'{self.pmap.model.id}'; the fit is at the edge of the box. Check the data's units."
        )

    def summary(self) -> dict[str, Any]:
        sd = np.sqrt(np.diag(self.cov))
        lo, mid, hi = (self.pmap.values(self.theta_map + q * sd) for q in (-1.645, 0.0, 1.645))
        return {
            name: {"map": float(m), "q05": float(a), "q95": float(b), "information": self.information[name]}
            for name, m, a, b in zip(self.pmap.names, mid, lo, hi, strict=True)
        }

    def diagnostics(self) -> dict[str, Any]:
        return {
            "method": "laplace",
            "starts": int(self.start_costs.size),
            "starts_within_1pct": int(np.sum(self.start_costs <= self.cost * 1.01)),
            "cost": self.cost,
            "error_scale": self.error_scale,
            "residual_autocorrelation": self.autocorrelation,
            "rmse": self.rmse,
            "censored": self.censored,
            "wall_s": self.wall_s,
            "identified": self.summary(),
        }


def start_design(prior: GaussianPrior, starts: int) -> np.ndarray:
    """The prior mean and ``starts - 1`` scrambled-Sobol points of the prior (fixed seed:
    the same starts whatever the twin's seed, so the MAP does not depend on it)."""
    k = len(prior.names)
    if starts == 1:
        return prior.mean[None, :]
    u = qmc.Sobol(k, scramble=True, seed=20261129).random_base2(int(np.ceil(np.log2(starts - 1))))[: starts - 1]
    z = norm.ppf(np.clip(u, 1e-6, 1 - 1e-6))
    return np.vstack([prior.mean, prior.mean + z @ prior.chol.T])


def censored_residuals(y: Any, pred: Any, weights: Any, side: Any) -> Any:
    """Gauss-Newton residuals: ``(y - pred) * weights`` for a reading inside the instrument's
    range; for a censored one (``side`` -1 at the lower limit ``y``, +1 at the upper) the
    pseudo-residual ``sqrt(-2 log P(reading beyond the limit))``, whose square is the
    censored (Tobit) negative log-likelihood up to a constant."""
    z = (y - pred) * weights
    tail = jnp.minimum(jnp.where(side < 0, z, -z), 30.0)  # beyond 30 sd the tail is 1: no cost
    pseudo = jnp.sqrt(jnp.maximum(-2.0 * jax.scipy.stats.norm.logcdf(tail), 1e-300))
    return jnp.where(side == 0, z, pseudo)


def _batched_objective(
    problem: CalibrationProblem, settings: IdentifySettings, prior: GaussianPrior, values: np.ndarray, side: np.ndarray
) -> Any:
    """``(theta (S, k), weights (n_obs,)) -> (cost, H, g, residuals)`` with the forward-mode
    Jacobian of the residuals: one compiled function serves steps, trial points and the result."""
    model, pmap = problem.model, problem.parameters
    t_out = problem.output_times
    solver = replace(
        problem.settings, rtol=max(problem.settings.rtol, settings.rtol), atol=max(problem.settings.atol, settings.atol)
    )
    run = cohort_observable_function(model, [problem.inputs] * settings.starts, t_out, solver)
    rows = jnp.asarray(np.searchsorted(t_out, problem.times))
    cols = jnp.asarray([model.observable_names.index(o) for o in problem.observables])
    y, censored = jnp.asarray(values), jnp.asarray(side)
    mu, precision = jnp.asarray(prior.mean), jnp.asarray(np.linalg.inv(prior.cov))
    lower = jnp.asarray([p.lower for p in model.parameters])
    upper = jnp.asarray([p.upper for p in model.parameters])
    k = len(pmap.names)

    def residuals(theta: Any, weights: Any) -> tuple[Any, Any]:
        pred = run(jax.vmap(pmap.full)(theta))[:, rows, cols]
        finite = jnp.isfinite(pred)
        r = censored_residuals(y, jnp.where(finite, pred, y), weights, censored)
        return jnp.where(finite, r, 0.0), pred

    def cost_of(theta: Any, r: Any, pred: Any) -> Any:
        full = jax.vmap(pmap.full)(theta)
        inside = jnp.all((full >= lower) & (full <= upper), axis=1) & jnp.all(jnp.isfinite(pred), axis=1)
        d = theta - mu
        cost = jnp.sum(r**2, axis=1) + jnp.einsum("si,ij,sj->s", d, precision, d)
        return jnp.where(inside, cost, jnp.inf)

    @jax.jit
    def parts(theta: Any, weights: Any) -> tuple[Any, Any, Any, Any]:
        directions = jnp.broadcast_to(jnp.eye(k)[:, None, :], (k, theta.shape[0], k))
        (r, pred), (jac, _) = jax.vmap(
            lambda v: jax.jvp(lambda t: residuals(t, weights), (theta,), (v,)), out_axes=((None, None), 0)
        )(directions)
        jac = jnp.nan_to_num(jac)  # (k, S, n_obs)
        hessian = jnp.einsum("aso,bso->sab", jac, jac) + precision
        gradient = -jnp.einsum("aso,so->sa", jac, r) - (theta - mu) @ precision
        return cost_of(theta, r, pred), hessian, gradient, r

    return parts


@jax.jit
def _trial(theta: Any, hessian: Any, gradient: Any, damping: Any, max_step: Any) -> Any:
    """The damped Gauss-Newton step of every start, each component clipped to ``max_step``."""
    diag = jnp.diagonal(hessian, axis1=1, axis2=2)[:, :, None] * jnp.eye(theta.shape[1])
    step = jnp.linalg.solve(hessian + damping[:, None, None] * diag, gradient[:, :, None])[:, :, 0]
    return theta + jnp.clip(jnp.nan_to_num(step), -max_step, max_step)


@jax.jit
def _accept(theta: Any, trial: Any, current: Any, proposed: Any, damping: Any) -> tuple[Any, Any, Any]:
    """Keep each start's trial where it lowered the cost (and relax its damping), else stay (and raise it)."""
    better = proposed[0] < current[0]

    def pick(new: Any, old: Any) -> Any:
        return jnp.where(better.reshape(better.shape + (1,) * (new.ndim - 1)), new, old)

    kept = jax.tree.map(pick, proposed, current)
    return pick(trial, theta), kept, jnp.where(better, damping / 3.0, damping * 4.0)


def _lm(
    parts: Any, theta: Any, weights: Any, steps: int, max_step: float, note: Progress, label: str
) -> tuple[Any, Any, list[float]]:
    """Levenberg-Marquardt from every start at once. A trial point is evaluated with its
    Jacobian, so an accepted step needs no second solve; returns ``theta``, ``parts`` at it
    and the best cost after each step."""
    damping = jnp.full(theta.shape[0], 1e-2)
    current = parts(theta, weights)
    history: list[float] = []
    costs: list[np.ndarray] = []
    for i in range(steps):
        costs.append(np.asarray(current[0]))
        if converged(costs, steps - i):
            note(f"{label}: converged after {i} steps")
            break
        trial = _trial(theta, current[1], current[2], damping, max_step)
        theta, current, damping = _accept(theta, trial, current, parts(trial, weights), damping)
        best = float(jnp.min(current[0]))
        history.append(best)
        note(f"{label} {i + 1}/{steps}: best cost {best:.1f}")
    return theta, current, history


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")


def _error_scale(standardized: np.ndarray, observables: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Per observable, the RMS of the standardized residuals of the readings inside the
    instrument's range (1.0 when every reading is censored: nothing to estimate it from)."""
    scale = {}
    for name in sorted(set(observables.tolist())):
        rms = _rms(standardized[(observables == name) & measured])
        scale[name] = rms if np.isfinite(rms) else 1.0
    return scale


def converged(
    costs: list[np.ndarray], remaining: int, window: int = CONVERGED_WINDOW, tol: float = CONVERGED_TOL
) -> bool:
    """Whether Levenberg-Marquardt can stop: over the last ``window`` steps the best start
    improved by at most ``tol`` of its cost, and no other start, going on at its recent
    pace for the ``remaining`` steps, would overtake it."""
    if len(costs) <= window:
        return False
    now, before = costs[-1], costs[-1 - window]
    best = int(np.argmin(now))
    if not np.isfinite(now[best]) or before[best] - now[best] > tol * now[best]:
        return False
    others = np.isfinite(now) & (np.arange(now.size) != best)
    pace = (before[others] - now[others]) / window
    return bool(np.all(now[others] - pace * remaining > now[best]))


def _lag1(r: np.ndarray, times: np.ndarray, observables: tuple[str, ...]) -> float:
    """Lag-1 autocorrelation of the standardized residuals of each observable's series, pooled."""
    num = den = 0.0
    for name in set(observables):
        sel = np.flatnonzero(np.asarray(observables) == name)
        series = r[sel[np.argsort(times[sel], kind="stable")]]
        series = series - series.mean()
        num += float(np.sum(series[1:] * series[:-1]))
        den += float(np.sum(series**2))
    return float(np.clip(num / den, 0.0, 0.95)) if den > 0 else 0.0


def identify(
    problem: CalibrationProblem,
    prior: GaussianPrior,
    settings: IdentifySettings | None = None,
    progress: Progress | None = None,
) -> Identification:
    """The twin's MAP, Laplace posterior and model-error scale on ``problem``'s data.

    Arguments:
        problem: the data, inputs and parameter map (``bounded=True`` recommended).
        prior: the Gaussian prior of the fitted parameters on the map's scale.
        settings: starts and iterations.
        progress: called with a line of text after every iteration.

    Raises:
        CalibrationError: when no start can be simulated inside the parameter bounds.
    """
    settings = settings or IdentifySettings()
    note = progress or (lambda _: None)
    t0 = time.perf_counter()
    pmap = problem.parameters
    if tuple(prior.names) != pmap.names:
        raise CalibrationError(f"The prior is over {list(prior.names)}; the twin fits {list(pmap.names)}.")
    noise = problem.noise_sd_fns()
    side = np.array([m.censoring(v) for m, v in zip(noise, problem.values, strict=True)], dtype=np.int8)
    at_limit = np.array([m.read(v) for m, v in zip(noise, problem.values, strict=True)])  # a "LOW" is its limit
    parts = _batched_objective(problem, settings, prior, at_limit, side)
    sensor = np.array([m.sd(float(abs(v))) for m, v in zip(noise, at_limit, strict=True)])
    theta = jnp.asarray(start_design(prior, settings.starts))
    theta, (cost, _, _, r), history = _lm(
        parts, theta, jnp.asarray(1.0 / sensor), settings.iterations, settings.max_step, note, "fit"
    )
    costs = np.asarray(cost)
    if not np.isfinite(costs).any():
        raise CalibrationError(
            f"No start of the {settings.starts} could be simulated inside the bounds of '{problem.model.id}'; "
            "check the units of the observations and doses."
        )
    best = int(np.argmin(costs))
    obs = np.asarray(problem.observables)
    scale = _error_scale(np.asarray(r[best]), obs, side == 0)
    sd = sensor * np.array([scale[o] for o in problem.observables])
    weights = jnp.asarray(1.0 / sd)
    if settings.refine:
        theta, (cost, hessian, _, r), more = _lm(
            parts, theta, weights, settings.refine, settings.max_step, note, "refine"
        )
        history += more
    else:
        cost, hessian, _, r = parts(theta, weights)
    costs = np.asarray(cost)
    best = int(np.argmin(costs))
    measured = side == 0
    residual = np.asarray(r[best]) * sd
    rho = _lag1(np.asarray(r[best])[measured], problem.times[measured], tuple(obs[measured]))
    precision = np.linalg.inv(prior.cov)
    data_information = np.asarray(hessian[best]) - precision
    information = data_information * (1.0 - rho) / (1.0 + rho) + precision
    cov = np.linalg.inv((information + information.T) / 2.0)
    return Identification(
        pmap=pmap,
        theta_map=np.asarray(theta[best]),
        cov=(cov + cov.T) / 2.0,
        prior=prior,
        error_scale=scale,
        autocorrelation=rho,
        rmse={o: _rms(residual[(obs == o) & measured]) for o in scale},
        censored=int((~measured).sum()),
        readings=at_limit,
        side=side,
        sd=sd,
        cost=float(costs[best]),
        start_costs=costs,
        wall_s=time.perf_counter() - t0,
        history=history,
    )
