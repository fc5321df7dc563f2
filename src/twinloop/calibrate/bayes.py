"""Bayesian calibration of one patient with numpyro: NUTS (default) or SVI.

The sampled vector is standardized, ``z ~ N(0, I)``, and mapped to the log-parameters
through the prior's Cholesky factor. With ``model_error > 0`` it holds one more
standard-normal latent per observable, the model-error scale of that observable's
noise (:mod:`twinloop.calibrate.model_error`), sampled jointly with the parameters.
A solve that fails (non-finite prediction) gives a log-density of -inf instead of an
exception. The batched engine is differentiated in forward mode (``NUTS(forward_mode_differentiation=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import SVI, Trace_ELBO, init_to_value
from numpyro.infer.autoguide import AutoMultivariateNormal
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model

from twinloop.calibrate.model_error import error_ratio
from twinloop.calibrate.posterior import Posterior
from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import CalibrationProblem
from twinloop.errors import InputError, NotFittedError

# Compiled samplers by problem structure, shared by every Calibrator (e.g. one per twin).
_COMPILED_NUTS: dict[tuple[Any, ...], Any] = {}


def _structure_key(problem: CalibrationProblem, prior: GaussianPrior) -> tuple[Any, ...]:
    """Everything a compiled sampler depends on except the observed values."""
    pm = problem.parameters
    x0 = None if problem.initial_state is None else np.asarray(problem.initial_state).tobytes()
    return (
        id(problem.model),
        pm.names,
        pm.base.tobytes(),
        problem.times.tobytes(),
        problem.observables,
        repr(problem.inputs),
        tuple(sorted((k, v) for k, v in problem.noise.items())),
        x0,
        problem.settings,
        prior.names,
        prior.mean.tobytes(),
        prior.cov.tobytes(),
    )


def error_groups(problem: CalibrationProblem) -> tuple[str, ...]:
    """The observables given a model-error scale, in the order of the latent vector."""
    return tuple(sorted(set(problem.observables)))


def _density_model(problem: CalibrationProblem, prior: GaussianPrior, model_error: float) -> Any:
    predict = problem.predictor()
    mean, chol = jnp.asarray(prior.mean), jnp.asarray(prior.chol)
    k = len(prior.names)
    groups = error_groups(problem) if model_error > 0 else ()
    group = jnp.asarray([groups.index(o) for o in problem.observables] if groups else [], dtype=jnp.int32)
    ranges = np.array([m.range for m in problem.noise_sd_fns()])
    censoring = (jnp.asarray(ranges[:, 0]), jnp.asarray(ranges[:, 1])) if np.isfinite(ranges).any() else None

    def model(values: Any, additive: Any, proportional: Any) -> None:
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([k + len(groups)]).to_event(1))
        log_theta = numpyro.deterministic("log_theta", mean + z[:k] @ chol.T)
        mu = predict(log_theta)
        ok = jnp.all(jnp.isfinite(mu))
        mu = jnp.where(ok, mu, 1.0)
        sd = jnp.sqrt(additive**2 + (proportional * mu) ** 2)
        if groups:
            sd = sd * error_ratio(z[k:], model_error)[group]
        numpyro.factor("solve_failed", jnp.where(ok, 0.0, -jnp.inf))
        if censoring is None:
            numpyro.sample("y", dist.Normal(mu, sd).to_event(1), obs=values)
        else:
            numpyro.factor("y", censored_log_likelihood(values, mu, sd, *censoring))

    return model


def censored_log_likelihood(values: Any, mu: Any, sd: Any, lower: Any, upper: Any) -> Any:
    """Gaussian log-likelihood of ``values``; a value at or beyond its instrument's limit
    enters by the probability of a reading beyond the limit (Tobit / Beal's M3)."""
    below, above = values <= lower, values >= upper
    z = (jnp.clip(values, lower, upper) - mu) / sd
    inside = dist.Normal(mu, sd).log_prob(jnp.where(below | above, mu, values))
    tails = jnp.where(below, jax.scipy.stats.norm.logcdf(z), jax.scipy.stats.norm.logcdf(-z))
    return jnp.sum(jnp.where(below | above, tails, inside))


@dataclass
class Calibrator:
    """Calibrate one patient's parameters.

    Arguments:
        prior: the Gaussian prior on the fitted parameters' unconstrained values (``GaussianPrior.from_population``).
        method: ``"nuts"`` (default) or ``"svi"`` (a full-rank Gaussian in z).
        num_warmup, num_samples, num_chains: NUTS settings (chains run vectorized).
        svi_steps, learning_rate: SVI settings (Adam).
        seed: the JAX key seed.
        model_error: the scale of the half-normal prior of each observable's model-error
            ratio ``tau``, sampled with the parameters (:mod:`twinloop.calibrate.model_error`);
            0 (default): the declared noise is taken as exact.
        strict: raise ``CalibrationError`` when the diagnostics fail instead of warning.

    ``fit(problem)`` returns ``self``; the result is ``posterior_``. Fitting a problem
    that differs from the previous one only in its observed values reuses the
    compiled sampler.

    Example:
        >>> cal = Calibrator(prior).fit(problem)  # doctest: +SKIP
        >>> cal.posterior_.summary()  # doctest: +SKIP
    """

    prior: GaussianPrior
    method: Literal["nuts", "svi"] = "nuts"
    num_warmup: int = 300
    num_samples: int = 300
    num_chains: int = 4
    svi_steps: int = 3000
    learning_rate: float = 0.05
    seed: int = 0
    strict: bool = False
    target_accept: float = 0.85
    max_tree_depth: int = 6
    model_error: float = 0.0
    posterior_: Posterior | None = field(default=None, init=False)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.method not in ("nuts", "svi"):
            raise InputError(f"method must be 'nuts' or 'svi'; got {self.method!r}.")
        if min(self.num_warmup, self.num_samples, self.num_chains, self.svi_steps) < 1:
            raise InputError("num_warmup, num_samples, num_chains and svi_steps must all be >= 1.")
        if not self.model_error >= 0:
            raise InputError(f"model_error must be >= 0 (0: no model error); got {self.model_error!r}.")

    def fit(self, problem: CalibrationProblem, *, init: np.ndarray | None = None) -> Calibrator:
        """Calibrate; ``init`` (``(num_chains, k)`` log-parameters, e.g. draws of an amortized
        posterior) starts the NUTS chains there instead of near the prior mean."""
        if tuple(problem.parameters.names) != tuple(self.prior.names):
            raise InputError(
                f"The problem fits {list(problem.parameters.names)} but the prior is over "
                f"{list(self.prior.names)}; use the same names in the same order."
            )
        key = (*_structure_key(problem, self.prior), self.model_error)
        if self._cache.get("key") != key:
            groups = error_groups(problem) if self.model_error > 0 else ()
            model = _density_model(problem, self.prior, self.model_error)
            self._cache = {"key": key, "model": model, "groups": groups}
        additive, proportional = problem.noise_arrays()
        args = (jnp.asarray(problem.values), jnp.asarray(additive), jnp.asarray(proportional))
        rng = jax.random.PRNGKey(self.seed)
        z0 = None
        if init is not None:
            start = np.asarray(init, dtype=np.float64).reshape(-1, len(self.prior.names))
            if start.shape[0] != self.num_chains:
                raise InputError(
                    f"init needs one start per chain ({self.num_chains}, {len(self.prior.names)}); got {start.shape}."
                )
            z = np.linalg.solve(self.prior.chol, (start - self.prior.mean).T).T
            z0 = jnp.asarray(np.hstack([z, np.zeros((z.shape[0], len(self._cache["groups"])))]))
        self.posterior_ = self._nuts(rng, args, z0) if self.method == "nuts" else self._svi(rng, args)
        self.posterior_.transform = problem.parameters.values
        self.posterior_.check(self.strict)
        return self

    def _nuts(self, rng: Any, args: tuple[Any, ...], start: Any = None) -> Posterior:
        if "nuts" not in self._cache:
            key = (self._cache["key"], self.num_warmup, self.num_samples, self.target_accept, self.max_tree_depth)
            if key not in _COMPILED_NUTS:
                if len(_COMPILED_NUTS) >= 8:
                    _COMPILED_NUTS.pop(next(iter(_COMPILED_NUTS)))
                _COMPILED_NUTS[key] = self._compile_nuts(args)
            self._cache["nuts"] = _COMPILED_NUTS[key]
        keys = jax.random.split(rng, 2 * self.num_chains)
        z0 = 0.5 * jax.vmap(lambda k: jax.random.uniform(k, (self._size,), minval=-1.0, maxval=1.0))(
            keys[self.num_chains :]
        )
        if start is not None:
            z0 = start
        zs, diverging = self._cache["nuts"](keys[: self.num_chains], z0, *args)
        diverging = np.asarray(diverging)
        return self._posterior(np.asarray(zs), "nuts", int(diverging.sum()), {"diverging": diverging})

    @property
    def _size(self) -> int:
        """Length of the sampled vector: the parameters, then one model-error latent per observable."""
        return len(self.prior.names) + len(self._cache["groups"])

    def _posterior(self, z: np.ndarray, method: str, divergences: int, extra: dict[str, Any]) -> Posterior:
        """The posterior of sampled vectors ``z`` ``(chains, draws, size)``."""
        k = len(self.prior.names)
        log_theta = self.prior.mean + z[..., :k] @ self.prior.chol.T
        groups = self._cache["groups"]
        errors = error_ratio(z[..., k:], self.model_error) if groups else None
        return Posterior(self.prior.names, log_theta, method, divergences, extra, groups, errors)

    def _compile_nuts(self, args: tuple[Any, ...]) -> Any:
        """One jitted function running warm-up and sampling of every chain (vmapped),
        compiled once per problem structure: refits with new values reuse it."""
        model = self._cache["model"]
        zeros = jnp.zeros(self._size)
        _, potential_gen, _, _ = initialize_model(
            jax.random.PRNGKey(0),
            model,
            model_args=args,
            dynamic_args=True,
            init_strategy=init_to_value(values={"z": zeros}),
        )
        init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")
        warmup, total = self.num_warmup, self.num_warmup + self.num_samples

        def chain(key: Any, z0: Any, *model_args: Any) -> tuple[Any, Any]:
            state = init_kernel(
                {"z": z0},
                num_warmup=warmup,
                dense_mass=True,
                target_accept_prob=self.target_accept,
                max_tree_depth=self.max_tree_depth,
                model_args=model_args,
                rng_key=key,
            )

            def step(s: Any, _: Any) -> tuple[Any, tuple[Any, Any]]:
                s = sample_kernel(s, model_args=model_args)
                return s, (s.z["z"], s.diverging)

            _, (zs, div) = jax.lax.scan(step, state, None, length=total)
            return zs[warmup:], div[warmup:]

        return jax.jit(jax.vmap(chain, in_axes=(0, 0, None, None, None)))

    def _svi(self, rng: Any, args: tuple[Any, ...]) -> Posterior:
        model = self._cache["model"]
        guide = AutoMultivariateNormal(model, init_loc_fn=init_to_value(values={"z": jnp.zeros(self._size)}))
        svi = SVI(model, guide, numpyro.optim.Adam(self.learning_rate), Trace_ELBO())
        run_key, draw_key = jax.random.split(rng)
        result = svi.run(run_key, self.svi_steps, *args, progress_bar=False)
        z = guide.sample_posterior(draw_key, result.params, sample_shape=(self.num_samples * self.num_chains,))["z"]
        losses = np.asarray(result.losses)
        return self._posterior(np.asarray(z)[None], "svi", 0, {"final_loss": float(losses[-100:].mean())})

    @property
    def posterior(self) -> Posterior:
        if self.posterior_ is None:
            raise NotFittedError("This Calibrator has no posterior yet; call fit(problem) first.")
        return self.posterior_


def calibrate(problem: CalibrationProblem, prior: GaussianPrior, **settings: Any) -> Posterior:
    """One-call form of ``Calibrator(prior, **settings).fit(problem).posterior_``."""
    return Calibrator(prior, **settings).fit(problem).posterior
