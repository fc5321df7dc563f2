"""Training a closure term through the ODE solver (universal differential equations).

The network weights are shared by all patients; every training patient also has its
own fitted log-parameters, held near the population prior by its log-density. The
loss is the Gaussian negative log-likelihood of the observed series under the hybrid
model plus those prior terms; gradients flow through the engine's diffrax backend by
reverse-mode automatic differentiation (recursive checkpointing), and Adam (optax)
updates weights and patient parameters together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from twinloop._config import progress_shown
from twinloop.calibrate.noise import NoiseModel, noise_for
from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import ParameterMap
from twinloop.errors import InputError, NotFittedError
from twinloop.learn.closure import Closure, hybrid_model, network_digest
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.simulate.engine import SolverSettings, _diffrax_integrator, _grid_runner, _on_sample
from twinloop.simulate.grid import integration_grid, rasterize


@dataclass(frozen=True)
class SeriesSet:
    """Observed series of one observable for many patients on shared nominal times.

    ``values`` and ``mask`` are ``(n_patients, n_times)``; masked-out entries are missing.
    ``inputs`` is one plan for everyone or one per patient.
    """

    observable: str
    times: np.ndarray
    values: np.ndarray
    mask: np.ndarray
    inputs: Inputs | Sequence[Inputs]

    def __post_init__(self) -> None:
        times = np.asarray(self.times, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != times.size or np.shape(self.mask) != values.shape:
            raise InputError(
                f"SeriesSet needs values and mask of shape (n_patients, {times.size}); got {values.shape} "
                f"and {np.shape(self.mask)}."
            )
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", np.where(self.mask, values, 1.0))
        object.__setattr__(self, "mask", np.asarray(self.mask, dtype=bool))

    @property
    def plans(self) -> list[Inputs]:
        if isinstance(self.inputs, Inputs):
            return [self.inputs]
        return list(self.inputs)


def series_solver(model: Model, series: SeriesSet, settings: SolverSettings) -> tuple[Any, tuple[Any, ...], Any]:
    """``(run, args, axes)``: ``run(params, rates, jumps, *rest)`` observes one patient at the series'
    times with ``model`` (any model with the core's structure: the caller passes a hybrid)."""
    t_out = np.unique(np.r_[0.0, series.times])
    plans = series.plans
    grid = integration_grid(model, plans, t_out)
    rates, jumps = rasterize(model, plans, grid)
    shared = len(plans) == 1
    args = (
        jnp.asarray(rates[0] if shared else rates),
        jnp.asarray(jumps[0] if shared else jumps),
        jnp.asarray(grid),
        jnp.asarray(_on_sample(model, grid)),
        jnp.asarray(np.searchsorted(grid, t_out)),
    )
    rows = jnp.asarray(np.searchsorted(t_out, series.times))
    column = model.observable_names.index(series.observable)

    def run(m: Model, params: Any, *a: Any) -> Any:
        return _grid_runner(m, _diffrax_integrator(m, settings), save_states=False)(params, *a)["observables"][
            rows, column
        ]

    axes = (None, 0, None if shared else 0, None if shared else 0, None, None, None)
    return run, args, axes


def series_objective(
    core: Model,
    parameters: ParameterMap,
    prior: GaussianPrior,
    series: SeriesSet,
    noise: NoiseModel,
    settings: SolverSettings,
) -> Any:
    """``objective(model, log_theta)``: the Gaussian negative log-likelihood of every series
    under ``model`` (the core or a hybrid of it) plus each patient's prior term."""
    run, args, axes = series_solver(core, series, settings)
    values, mask = jnp.asarray(series.values), jnp.asarray(series.mask)
    mean, inv_chol = jnp.asarray(prior.mean), jnp.asarray(np.linalg.inv(prior.chol))

    def objective(model: Model, log_theta: Any) -> Any:
        params = jax.vmap(parameters.full)(log_theta)
        mu = jax.vmap(lambda p, *a: run(model, p, *a), in_axes=axes[1:])(params, *args)
        mu = jnp.where(jnp.isfinite(mu), mu, 1e6)
        sd = jnp.sqrt(noise.additive**2 + (noise.proportional * mu) ** 2)
        nll = jnp.where(mask, 0.5 * ((values - mu) / sd) ** 2 + jnp.log(sd), 0.0)
        z = (log_theta - mean) @ inv_chol.T
        return jnp.sum(nll) + 0.5 * jnp.sum(z**2)

    return objective


@dataclass
class ClosureTrainer:
    """Fit a closure's network (and each training patient's parameters) to observed series.

    Arguments:
        core: the mechanistic core.
        closure: the learned term's declaration.
        parameters: the per-patient fitted log-parameters (:class:`ParameterMap`).
        prior: their population prior.
        noise: the observation noise (default: the observable's).
        steps, learning_rate: Adam settings; gradients are clipped to norm 10 and a
            step with a non-finite loss is skipped.
        seed: the network's initialization key.

    ``fit(series)`` returns ``self``; ``model_`` is the trained hybrid model, ``network_``
    its network, ``log_theta_`` the training patients' fitted log-parameters and
    ``loss_history_`` the loss per step.
    """

    core: Model
    closure: Closure
    parameters: ParameterMap
    prior: GaussianPrior
    noise: NoiseModel | None = None
    steps: int = 400
    learning_rate: float = 0.02
    seed: int = 0
    settings: SolverSettings = field(default_factory=lambda: SolverSettings(backend="diffrax", rtol=1e-5, atol=1e-6))
    network_: Any = field(default=None, init=False)
    log_theta_: np.ndarray | None = field(default=None, init=False)
    loss_history_: list[float] = field(default_factory=list, init=False)
    model_: Model | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if tuple(self.parameters.names) != tuple(self.prior.names):
            raise InputError(
                f"The parameter map fits {list(self.parameters.names)} but the prior is over {list(self.prior.names)}."
            )
        if self.settings.backend != "diffrax":
            raise InputError("ClosureTrainer differentiates in reverse mode: use SolverSettings(backend='diffrax').")
        if self.steps < 1:
            raise InputError(f"steps must be >= 1; got {self.steps}.")

    def loss_function(self, series: SeriesSet) -> tuple[Any, Any]:
        """``(loss(trainable, static), (network, log_theta))``: the objective and its starting point."""
        core, closure = self.core, self.closure
        noise = self.noise or noise_for(core, series.observable)
        objective = series_objective(core, self.parameters, self.prior, series, noise, self.settings)
        n = series.values.shape[0]

        def loss(network: Any, log_theta: Any) -> Any:
            return objective(hybrid_model(core, closure, network, digest="training"), log_theta) / n

        mean = jnp.asarray(self.prior.mean)
        start = (closure.network(jax.random.key(self.seed)), jnp.tile(mean, (n, 1)))
        return loss, start

    def fit(self, series: SeriesSet, *, progress: bool = False) -> ClosureTrainer:
        loss, (network, log_theta) = self.loss_function(series)
        params, static = eqx.partition((network, log_theta), eqx.is_inexact_array)
        optimizer = optax.apply_if_finite(
            optax.chain(optax.clip_by_global_norm(10.0), optax.adam(self.learning_rate)), max_consecutive_errors=50
        )
        state = optimizer.init(params)

        @eqx.filter_jit
        def step(p: Any, s: Any) -> tuple[Any, Any, Any]:
            value, grads = jax.value_and_grad(lambda q: loss(*eqx.combine(q, static)))(p)
            updates, s = optimizer.update(grads, s, p)
            return optax.apply_updates(p, updates), s, value

        from rich.progress import track

        self.loss_history_ = []
        shown = progress and progress_shown()
        iterator = track(range(self.steps), description="training closure") if shown else range(self.steps)
        for _ in iterator:
            params, state, value = step(params, state)
            self.loss_history_.append(float(value))
        network, log_theta = eqx.combine(params, static)
        self.network_, self.log_theta_ = network, np.asarray(log_theta)
        self.model_ = hybrid_model(self.core, self.closure, network)
        return self

    @property
    def model(self) -> Model:
        if self.model_ is None:
            raise NotFittedError("This ClosureTrainer is not fitted; call fit(series) first.")
        return self.model_

    def digest(self) -> str:
        if self.network_ is None:
            raise NotFittedError("This ClosureTrainer is not fitted; call fit(series) first.")
        return network_digest(self.network_)


def map_estimates(
    model: Model,
    parameters: ParameterMap,
    prior: GaussianPrior,
    series: SeriesSet,
    *,
    noise: NoiseModel | None = None,
    steps: int = 300,
    learning_rate: float = 0.05,
    settings: SolverSettings | None = None,
) -> np.ndarray:
    """Maximum-a-posteriori log-parameters ``(n_patients, k)`` of many patients at once (Adam
    through the solver in reverse mode); works for any model, hybrid or not."""
    settings = settings or SolverSettings(backend="diffrax", rtol=1e-5, atol=1e-6)
    noise = noise or noise_for(model, series.observable)
    objective = series_objective(model, parameters, prior, series, noise, settings)

    def loss(log_theta: Any) -> Any:
        return objective(model, log_theta)

    mean = jnp.asarray(prior.mean)
    optimizer = optax.apply_if_finite(optax.adam(learning_rate), max_consecutive_errors=50)
    theta = jnp.tile(mean, (series.values.shape[0], 1))
    state = optimizer.init(theta)

    @jax.jit
    def step(th: Any, s: Any) -> tuple[Any, Any]:
        grads = jax.grad(loss)(th)
        updates, s = optimizer.update(grads, s, th)
        return optax.apply_updates(th, updates), s

    for _ in range(steps):
        theta, state = step(theta, state)
    return np.asarray(theta)
