"""A population fitted to an observed cohort: hierarchical Bayesian NLME with numpyro.

For patient ``i`` the fitted log-parameters are
``log theta_i = mu + B x_i + eta_i`` with ``eta_i ~ N(0, Omega)``,
``Omega = diag(omega_sd) L L^T diag(omega_sd)``, and ``x_i`` the centred covariates
(numeric: standardized; categorical: one indicator per non-reference level, off by
default). Priors: ``mu ~ N(log typical of the base population, prior_scale)``,
``omega_sd ~ HalfNormal(1)``, ``L ~ LKJ(2)``, ``B ~ N(0, 0.5)``, and log-normal priors
on the combined residual error (additive and proportional) centred on the
observable's default noise. Parameters that are not fitted keep the base
population's typical value (with its covariate effects) for each patient.

Inference is stochastic variational (SVI, a mean-field Gaussian guide, Adam), started
from each patient's MAP estimate under the base population (Levenberg-Marquardt).
Every patient is solved together by the batched engine; the gradient comes from one
forward-mode derivative per fitted parameter for the whole cohort. Mean-field SVI
shrinks the variances of parameters the data identify weakly (see the fit's summary). Only population
quantities are kept after the fit: the individual estimates stay in memory (for
diagnostics), so nothing patient-level reaches the synthetic population.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pandas as pd
from numpyro.infer import SVI, Trace_ELBO, init_to_value
from numpyro.infer.autoguide import AutoNormal

from twinloop.calibrate.noise import noise_for
from twinloop.calibrate.observed import ObservedCohort
from twinloop.cohort.population import Population
from twinloop.cohort.spec import Covariate
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.simulate.engine import SolverSettings, cohort_observable_function


@dataclass(frozen=True)
class FitSettings:
    """SVI settings of a population fit.

    Arguments:
        steps: optimization steps (Adam, learning rate decaying tenfold over the run).
        learning_rate: the starting learning rate.
        draws: posterior draws kept of the population quantities.
        prior_scale: sd of the prior on each log typical value around the base population's.
        covariate_effects: estimate effects of every covariate on every fitted parameter.
        seed: the JAX key seed.
        solver: tolerances of the engine during the fit.
    """

    steps: int = 400
    learning_rate: float = 0.03
    draws: int = 1000
    prior_scale: float = 1.0
    covariate_effects: bool = False
    seed: int = 0
    solver: SolverSettings = field(default_factory=lambda: SolverSettings(rtol=1e-5, atol=1e-6))

    def __post_init__(self) -> None:
        if self.steps < 1 or self.draws < 1 or self.learning_rate <= 0 or self.prior_scale <= 0:
            raise InputError(
                f"FitSettings needs steps >= 1, draws >= 1, learning_rate > 0 and prior_scale > 0; got {self}."
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "draws": self.draws,
            "prior_scale": self.prior_scale,
            "covariate_effects": self.covariate_effects,
            "seed": self.seed,
            "rtol": self.solver.rtol,
            "atol": self.solver.atol,
        }


@dataclass(frozen=True)
class CovariateColumn:
    """One column of the standardized covariate matrix: ``(x - center) / scale``, or for
    a categorical covariate the indicator of ``level`` minus its share ``center``."""

    covariate: str
    level: str | None
    center: float = 0.0
    scale: float = 1.0
    reference: str | None = None

    @property
    def label(self) -> str:
        return self.covariate if self.level is None else f"{self.covariate}={self.level}"


def covariate_design(covariates: pd.DataFrame) -> tuple[list[CovariateColumn], np.ndarray]:
    """Columns and ``(n, m)`` matrix, every column centred (so the typical values are those of
    the observed mix); missing values take the median (numeric) or the mode."""
    columns: list[CovariateColumn] = []
    parts: list[np.ndarray] = []
    for name in covariates.columns:
        series = covariates[name]
        numeric = pd.to_numeric(series, errors="coerce")
        if numeric.notna().sum() == series.notna().sum() and series.notna().any():
            x = numeric.fillna(numeric.median()).to_numpy(dtype=np.float64)
            scale = float(np.std(x)) or 1.0
            columns.append(CovariateColumn(name, None, float(np.mean(x)), scale))
            parts.append((x - np.mean(x)) / scale)
            continue
        text = series.astype(str).where(series.notna(), None)
        counts = text.value_counts()
        if counts.empty:
            continue
        text = text.fillna(counts.index[0])
        for level in counts.index[1:]:
            indicator = (text == level).to_numpy(dtype=np.float64)
            columns.append(CovariateColumn(name, str(level), float(indicator.mean()), reference=str(counts.index[0])))
            parts.append(indicator - indicator.mean())
    matrix = np.stack(parts, axis=1) if parts else np.zeros((len(covariates), 0))
    return columns, matrix


def single_group(population: Population) -> Any:
    if len(population.groups) != 1:
        raise InputError(
            f"A population fit starts from a population with one group; '{population.name}' has "
            f"{[g.name for g in population.groups]}. Give a one-group population (e.g. one condition of it)."
        )
    return population.groups[0]


def base_parameters(model: Model, population: Population, covariates: pd.DataFrame) -> np.ndarray:
    """``(n, n_params)``: each patient at the population's typical values with its covariate effects."""
    group = single_group(population)
    n = len(covariates)
    full = {p.name: np.full(n, p.default) for p in model.parameters}
    full.update({k: np.full(n, v) for k, v in population.fixed.items()})
    values = {k: np.full(n, v) for k, v in group.typical.items()}
    for effect in population.effects:
        if effect.covariate in covariates.columns:
            values[effect.parameter] = values[effect.parameter] * effect.factor(covariates[effect.covariate].to_numpy())
    full.update({k: v for k, v in values.items() if k in full})
    if model.derive is not None:
        latent = {k: v for k, v in values.items() if k not in full}
        full.update(model.derive({**full, **latent}))
    return np.stack([full[name] for name in model.parameter_names], axis=1)


def cohort_predictor(
    data: ObservedCohort, names: Sequence[str], base: np.ndarray, settings: SolverSettings
) -> tuple[Any, Any]:
    """``log_theta (n, k) -> predictions (n_obs,)`` with a reverse-mode rule built from k
    forward-mode derivatives of the whole cohort (each patient depends on its own row),
    and ``log_theta -> (predictions, jacobian (k, n_obs))`` itself."""
    model = data.model
    run = cohort_observable_function(model, data.inputs, data.output_times, settings)
    rows = jnp.asarray(np.searchsorted(data.output_times, data.times))
    cols = jnp.asarray(data.observable_index)
    who = jnp.asarray(data.patient)
    index = jnp.asarray([model.parameter_names.index(p) for p in names])
    base_j = jnp.asarray(base)
    n, k = data.n, len(names)

    def predict(log_theta: Any) -> Any:
        params = base_j.at[:, index].set(jnp.exp(log_theta))
        return run(params)[who, rows, cols]

    @jax.custom_vjp
    def wrapped(log_theta: Any) -> Any:
        return predict(log_theta)

    def forward(log_theta: Any) -> tuple[Any, Any]:
        directions = jnp.broadcast_to(jnp.eye(k)[:, None, :], (k, n, k))
        y, jac = jax.vmap(lambda v: jax.jvp(predict, (log_theta,), (v,)), out_axes=(None, 0))(directions)
        return y, jnp.nan_to_num(jac)

    def backward(jac: Any, cotangent: Any) -> tuple[Any]:
        per_observation = (jac * jnp.nan_to_num(cotangent)).T  # (n_obs, k)
        return (jax.ops.segment_sum(per_observation, who, num_segments=n),)

    wrapped.defvjp(forward, backward)
    return wrapped, forward


def individual_map(
    data: ObservedCohort,
    predict: Any,
    value_and_jacobian: Any,
    prior_mu: np.ndarray,
    prior_cov: np.ndarray,
    noise_sd: Any,
    iterations: int = 20,
) -> np.ndarray:
    """Each patient's MAP log-parameters under ``N(prior_mu, prior_cov)`` by Levenberg-Marquardt
    (all patients at once; the Jacobian is the cohort's forward-mode one). This gives
    the population fit a start near the data."""
    n, k = data.n, prior_mu.size
    who = jnp.asarray(data.patient)
    y = jnp.asarray(data.values)
    precision = jnp.asarray(np.linalg.inv(prior_cov))
    mu0 = jnp.asarray(prior_mu)

    def residuals_and_cost(theta: Any, pred: Any) -> tuple[Any, Any, Any]:
        ok = jnp.isfinite(pred)
        sd = noise_sd(jnp.where(ok, pred, 1.0))
        r = jnp.where(ok, (y - pred) / sd, 1e3)
        d = theta - mu0
        cost = jax.ops.segment_sum(r**2, who, num_segments=n) + jnp.einsum("ij,jk,ik->i", d, precision, d)
        return r, sd, cost

    @jax.jit
    def objective_parts(theta: Any) -> tuple[Any, Any, Any]:
        pred, jac = value_and_jacobian(theta)
        r, sd, cost = residuals_and_cost(theta, pred)
        w = jac / sd  # (k, n_obs)
        jtj = jax.ops.segment_sum(jnp.einsum("ao,bo->oab", w, w), who, num_segments=n)
        jtr = jax.ops.segment_sum((w * r).T, who, num_segments=n) - (theta - mu0) @ precision
        return cost, jtj + precision, jtr

    @jax.jit
    def cost_only(theta: Any) -> Any:  # the trial step needs no Jacobian
        return residuals_and_cost(theta, predict(theta))[2]

    theta = jnp.broadcast_to(mu0, (n, k))
    damping = jnp.full(n, 1e-2)
    for _ in range(iterations):
        cost, hessian, gradient = objective_parts(theta)
        scaled = hessian + damping[:, None, None] * jnp.diagonal(hessian, axis1=1, axis2=2)[:, :, None] * jnp.eye(k)
        step = jnp.linalg.solve(scaled, gradient[:, :, None])[:, :, 0]
        trial = theta + jnp.clip(step, -1.0, 1.0)
        better = cost_only(trial) < cost
        theta = jnp.where(better[:, None], trial, theta)
        damping = jnp.where(better, damping / 3.0, damping * 4.0)
    return np.asarray(theta)


def _noise_priors(data: ObservedCohort) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-observation observable index into the noise vectors, and their prior centres (the
    noise the model declares; the fit estimates it)."""
    kinds = sorted(set(data.observables))
    which = np.array([kinds.index(o) for o in data.observables])
    typical = np.array([np.median(np.abs(data.values[which == i])) for i in range(len(kinds))])
    models = [noise_for(data.model, o) for o in kinds]
    additive = np.array([m.additive if m.additive > 0 else 0.05 * t for m, t in zip(models, typical, strict=True)])
    proportional = np.array([m.proportional if m.proportional > 0 else 0.05 for m in models])
    return which, additive, proportional


@dataclass
class PopulationFit:
    """The fitted population: posterior draws of its quantities, the base it started from."""

    model: Model
    base: Population
    names: tuple[str, ...]
    columns: list[CovariateColumn]
    draws: dict[str, np.ndarray]
    losses: np.ndarray
    observables: tuple[str, ...]
    data_summary: dict[str, Any]
    settings: FitSettings
    covariate_data: pd.DataFrame
    individual: np.ndarray = field(repr=False)

    # --- point estimates and intervals -------------------------------------------------
    @property
    def typical(self) -> dict[str, float]:
        """Posterior median of each typical value (at the covariate reference)."""
        return {n: float(np.exp(np.median(self.draws["mu"][:, j]))) for j, n in enumerate(self.names)}

    @property
    def omega(self) -> np.ndarray:
        """Posterior mean of the random effects' covariance (log scale)."""
        return np.asarray(self.draws["omega"].mean(axis=0))

    def summary(self) -> dict[str, Any]:
        """Medians and 90 % intervals of every population quantity."""

        def interval(values: np.ndarray) -> dict[str, float]:
            q = np.quantile(values, [0.05, 0.5, 0.95])
            return {"median": float(q[1]), "q05": float(q[0]), "q95": float(q[2])}

        sd = np.sqrt(np.diagonal(self.draws["omega"], axis1=1, axis2=2))
        corr = self.draws["omega"] / (sd[:, :, None] * sd[:, None, :])
        out: dict[str, Any] = {
            "typical": {n: interval(np.exp(self.draws["mu"][:, j])) for j, n in enumerate(self.names)},
            "omega_variance": {n: interval(sd[:, j] ** 2) for j, n in enumerate(self.names)},
            "correlation": {
                f"{a}~{b}": interval(corr[:, i, j])
                for i, a in enumerate(self.names)
                for j, b in enumerate(self.names)
                if i < j
            },
            "residual_error": {
                o: {
                    "additive": interval(self.draws["additive"][:, i]),
                    "proportional": interval(self.draws["proportional"][:, i]),
                }
                for i, o in enumerate(self.observables)
            },
        }
        if self.columns:
            out["covariate_effects"] = {
                f"{n} <- {c.label}": interval(self.draws["beta"][:, j, m] / c.scale)
                for j, n in enumerate(self.names)
                for m, c in enumerate(self.columns)
            }
        out["elbo_loss"] = {"first": float(self.losses[0]), "last_100_mean": float(self.losses[-100:].mean())}
        return out

    # --- the synthetic population ---------------------------------------------------------
    def population(
        self,
        *,
        draws: int = 0,
        targets: Mapping[str, Mapping[str, float]] | None = None,
        name: str | None = None,
        seed: int = 0,
    ) -> Population:
        """The fitted population as a :class:`Population` to sample a synthetic cohort from.

        Typical values and the random-effect covariance of the fitted parameters are
        the posterior's (the other parameters keep the base's); covariate
        distributions are refitted to the observed covariates (same families as the
        base); estimated covariate effects become population effects.

        Arguments:
            draws: 0 for the posterior point estimate; ``K > 0`` for a mixture of ``K``
                populations, each at one posterior draw (groups ``draw00`` ...), so the
                cohort carries the uncertainty of the fit.
            targets: target shares of categorical covariates, e.g.
                ``{"sex": {"female": 0.5, "male": 0.5}}`` (reweighting to target demographics).
        """
        raw = self.base.to_dict()
        ((group_name, group),) = raw["groups"].items()
        covariates = {c.name: c for c in single_group(self.base).covariates}
        fitted_covs = {
            n: _reweighted(covariates[n].fitted(self.covariate_data[n].to_numpy()), (targets or {}).get(n))
            for n in covariates
            if n in self.covariate_data.columns
        }
        unknown = sorted(set(targets or {}) - set(fitted_covs))
        if unknown:
            raise InputError(
                f"Targets name {unknown}, which are not covariates of the population ({sorted(fitted_covs)})."
            )
        group["covariates"].update({n: c.to_dict() for n, c in fitted_covs.items()})
        others = [n for n in self.base.omega.names if n not in self.names]
        base_omega = self.base.omega
        raw["effects"] = [e for e in raw["effects"] if e["parameter"] not in self.names] + self._effects()
        raw["name"] = name or f"{self.base.name}-fitted"
        raw["description"] = (
            f"Fitted (hierarchical Bayesian, SVI) to {self.data_summary['patients']} observed patients, "
            f"starting from '{self.base.name}'."
        )

        def omega_block(cov: np.ndarray) -> dict[str, Any]:
            k, m = len(self.names), len(others)
            full = np.zeros((k + m, k + m))
            full[:k, :k] = cov
            for i, a in enumerate(others):
                full[k + i, k + i] = base_omega.matrix[base_omega.names.index(a), base_omega.names.index(a)]
            return {"names": [*self.names, *others], "matrix": full.tolist()}

        if draws <= 0:
            group["typical"].update(self.typical)
            raw["omega"] = omega_block(self.omega)
            raw["groups"] = {group_name: group}
            return Population.from_dict(raw)
        pick = np.random.default_rng(seed).choice(self.draws["mu"].shape[0], size=draws, replace=False)
        groups = {}
        for g, s in enumerate(pick):
            typical = {
                **group["typical"],
                **{n: float(np.exp(self.draws["mu"][s, j])) for j, n in enumerate(self.names)},
            }
            groups[f"draw{g:02d}"] = {
                "fraction": 1.0 / draws,
                "covariates": group["covariates"],
                "typical": typical,
                "omega": omega_block(self.draws["omega"][s]),
            }
        raw["groups"] = groups
        raw["omega"] = omega_block(self.omega)
        return Population.from_dict(raw)

    def _effects(self) -> list[dict[str, Any]]:
        """Estimated covariate effects as population effects (posterior medians). A centred
        indicator gives every level a factor: ``exp(beta_level - sum_l beta_l share_l)``."""
        effects: list[dict[str, Any]] = []
        beta = np.median(self.draws["beta"], axis=0) if self.columns else np.zeros((len(self.names), 0))
        for j, name in enumerate(self.names):
            offsets: dict[str, float] = {}
            levels: dict[str, dict[str, float]] = {}
            for m, col in enumerate(self.columns):
                if col.level is None:
                    effects.append({"parameter": name, "covariate": col.covariate, "kind": "exponential",
                                    "reference": col.center, "coefficient": float(beta[j, m] / col.scale)})  # fmt: skip
                    continue
                offsets[col.covariate] = offsets.get(col.covariate, 0.0) - beta[j, m] * col.center
                levels.setdefault(col.covariate, {str(col.reference): 0.0})[col.level] = beta[j, m]
            for covariate, logs in levels.items():
                factors = {level: float(np.exp(v + offsets[covariate])) for level, v in logs.items()}
                effects.append({"parameter": name, "covariate": covariate, "kind": "categorical", "factors": factors})
        return effects


def _reweighted(covariate: Covariate, target: Mapping[str, float] | None) -> Covariate:
    if target is None:
        return covariate
    if covariate.distribution != "categorical":
        raise InputError(
            f"Target shares are for categorical covariates; '{covariate.name}' is {covariate.distribution}."
        )
    levels = set(covariate.params["levels"])
    shares = {str(k): float(v) for k, v in target.items()}
    if set(shares) - levels or not math.isclose(sum(shares.values()), 1.0, abs_tol=1e-6) or min(shares.values()) < 0:
        raise InputError(
            f"Target shares of '{covariate.name}' must be >= 0, sum to 1 and name its levels {sorted(levels)}; "
            f"got {shares}."
        )
    levels_shares = {"levels": {lv: shares.get(lv, 0.0) for lv in covariate.params["levels"]}}
    return Covariate(covariate.name, "categorical", levels_shares, covariate.unit, covariate.lower, covariate.upper)


def fit_population(
    data: ObservedCohort,
    base: Population,
    names: Sequence[str] | None = None,
    settings: FitSettings | None = None,
    *,
    progress: bool = False,
) -> PopulationFit:
    """Fit the population of ``data`` starting from ``base`` (see the module docstring).

    Arguments:
        names: parameters to fit (default: those with random effects in ``base``).
    """
    settings = settings or FitSettings()
    model = data.model
    if model.id != base.model_id:
        raise InputError(f"The population '{base.name}' is of model '{base.model_id}', the data of '{model.id}'.")
    group = single_group(base)
    names = tuple(names or [n for n in base.omega.names if n in model.parameter_names])
    unfit = [n for n in names if n not in group.typical]
    if unfit or not names:
        raise InputError(f"Fitted parameters need typical values in the population; {unfit or 'none'} have none.")
    if any(n in model.derived_parameters or n not in model.parameter_names for n in names):
        raise InputError(f"Fit only free parameters of '{model.id}'; got {list(names)}.")
    linear = [p.name for p in model.parameters if p.name in names and p.scale != "log"]
    if linear:
        raise InputError(
            f"A population fit has log-normal variability; {linear} of '{model.id}' are declared on the linear "
            "scale. Leave them out of names=... (they keep the population's values)."
        )
    columns, x = covariate_design(data.covariates) if settings.covariate_effects else ([], np.zeros((data.n, 0)))
    base_matrix = base_parameters(model, base, data.covariates)
    predict, value_and_jacobian = cohort_predictor(data, names, base_matrix, settings.solver)
    which, additive0, proportional0 = _noise_priors(data)
    k, m, n = len(names), x.shape[1], data.n
    prior_mu = np.log([group.typical[p] for p in names])
    x_j, which_j = jnp.asarray(x), jnp.asarray(which)

    def density(values: Any) -> None:
        mu = numpyro.sample("mu", dist.Normal(jnp.asarray(prior_mu), settings.prior_scale).to_event(1))
        sd = numpyro.sample("omega_sd", dist.HalfNormal(jnp.ones(k)).to_event(1))
        corr = numpyro.sample("omega_corr", dist.LKJCholesky(k, 2.0)) if k > 1 else jnp.ones((1, 1))
        beta = numpyro.sample("beta", dist.Normal(0.0, 0.5).expand([k, m]).to_event(2)) if m else jnp.zeros((k, 0))
        add = numpyro.sample("additive", dist.LogNormal(jnp.log(additive0), 1.0).to_event(1))
        prop = numpyro.sample("proportional", dist.LogNormal(jnp.log(proportional0), 1.0).to_event(1))
        with numpyro.plate("patients", n):
            eta = numpyro.sample("eta", dist.MultivariateNormal(jnp.zeros(k), scale_tril=sd[:, None] * corr))
        log_theta = mu + x_j @ beta.T + eta
        predicted = predict(log_theta)
        ok = jnp.isfinite(predicted)
        predicted = jnp.where(ok, predicted, 0.0)
        scale = jnp.sqrt(add[which_j] ** 2 + (prop[which_j] * predicted) ** 2)
        numpyro.factor("solve_failed", -1e6 * jnp.sum(~ok))
        numpyro.sample("y", dist.Normal(predicted, scale).to_event(1), obs=values)

    prior_cov = np.diag([_base_variance(base, p) for p in names])
    add_j, prop_j = jnp.asarray(additive0), jnp.asarray(proportional0)

    def default_sd(pred: Any) -> Any:
        return jnp.sqrt(add_j[which_j] ** 2 + (prop_j[which_j] * pred) ** 2)

    start_theta = individual_map(data, predict, value_and_jacobian, prior_mu, prior_cov, default_sd)
    start_mu = start_theta.mean(axis=0)
    start_sd = np.sqrt(np.maximum(start_theta.var(axis=0), 0.01))
    start = {"mu": jnp.asarray(start_mu), "eta": jnp.asarray(start_theta - start_mu),
             "omega_sd": jnp.asarray(start_sd), "additive": add_j, "proportional": prop_j}  # fmt: skip
    if k > 1:
        start["omega_corr"] = jnp.eye(k)
    if m:
        start["beta"] = jnp.zeros((k, m))
    guide = AutoNormal(density, init_loc_fn=init_to_value(values=start), init_scale=0.05)
    schedule = optax.exponential_decay(settings.learning_rate, settings.steps, 0.1)
    optimizer = numpyro.optim.optax_to_numpyro(optax.adam(schedule))
    svi = SVI(density, guide, optimizer, Trace_ELBO())
    run_key, draw_key = jax.random.split(jax.random.PRNGKey(settings.seed))
    values = jnp.asarray(data.values)
    # compiled once: run eagerly, numpyro's set-up compiles ~700 single operations (about 20 s)
    state = jax.jit(svi.init)(run_key, values)
    result = svi.run(run_key, settings.steps, values, progress_bar=progress, init_state=state)
    posterior = guide.sample_posterior(draw_key, result.params, sample_shape=(settings.draws,))
    sd = np.asarray(posterior["omega_sd"])
    corr = np.asarray(posterior["omega_corr"]) if k > 1 else np.ones((settings.draws, 1, 1))
    chol = sd[:, :, None] * corr
    draws = {
        "mu": np.asarray(posterior["mu"]),
        "omega": chol @ np.swapaxes(chol, 1, 2),
        "beta": np.asarray(posterior["beta"]) if m else np.zeros((settings.draws, k, 0)),
        "additive": np.asarray(posterior["additive"]),
        "proportional": np.asarray(posterior["proportional"]),
    }
    median = guide.median(result.params)
    beta_hat = np.asarray(median["beta"]) if m else np.zeros((k, 0))
    individual = np.asarray(median["mu"]) + x @ beta_hat.T + np.asarray(median["eta"])
    return PopulationFit(
        model=model,
        base=base,
        names=names,
        columns=columns,
        draws=draws,
        losses=np.asarray(result.losses),
        observables=tuple(sorted(set(data.observables))),
        data_summary=data.summary(),
        settings=settings,
        covariate_data=data.covariates,
        individual=individual,
    )


def _base_variance(population: Population, name: str) -> float:
    omega = population.omega
    if name in omega.names:
        i = omega.names.index(name)
        return max(float(omega.matrix[i, i]), 0.01)
    return 0.1
