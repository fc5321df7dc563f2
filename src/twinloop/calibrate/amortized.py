"""Amortized calibration: neural posterior estimation (NPE) with a conditional flow.

A masked autoregressive flow with rational-quadratic spline layers (flowjax) models
``p(z | embedding(series))``, where ``z`` are the fitted log-parameters standardized by
the prior and the embedding is a deep set over the observations: every observation
``(time, value)`` is mapped by one network, the masked mean over observations and the
observation count are mapped by a second. The embedding therefore takes irregular
times and any number of missing observations. Flow and embedding are trained together
by maximum likelihood on (parameters, simulated series) pairs from the prior (Adam,
early stopping on a held-out tenth). After training, a posterior for a new patient is
one embedding and a flow draw: milliseconds.

``n_flows > 1`` trains an ensemble on different seeds and splits and samples their
equal mixture: wider where the members disagree (use it when SBC shows one flow
overconfident).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax
from flowjax.bijections import RationalQuadraticSpline
from flowjax.distributions import Normal
from flowjax.flows import masked_autoregressive_flow
from rich.progress import track

from twinloop._atomic import write_atomic
from twinloop._config import progress_shown
from twinloop.calibrate.design import ObservationDesign, SimulatedSeries, simulate_observations
from twinloop.calibrate.posterior import Posterior
from twinloop.calibrate.prior import GaussianPrior
from twinloop.calibrate.problem import ParameterMap
from twinloop.errors import InputError, NotFittedError
from twinloop.models.inputs import Inputs

FORMAT_VERSION = 1


class SeriesEmbedding(eqx.Module):
    """Embedding of an irregular, partly missing series of one observable.

    Every observation is assigned to the nearest nominal visit of the design (within
    half the spacing to its neighbours); each visit contributes its log-value, the
    observation's shift from the nominal time and a presence flag (0 when missing).
    Observations beyond the design's visits are summarized by a deep set (a per-
    observation network, masked mean) so any series can be embedded.
    """

    visits: jax.Array
    slots: eqx.nn.MLP
    phi: eqx.nn.MLP
    time_scale: float = eqx.field(static=True)
    value_scale: float = eqx.field(static=True)

    def __init__(self, key: Any, *, visits: Any, time_scale: float, value_scale: float, width: int, size: int):
        k1, k2 = jax.random.split(key)
        self.visits = jnp.asarray(visits, dtype=jnp.float64)
        k = self.visits.size
        self.phi = eqx.nn.MLP(2, width // 4, width, 1, activation=jax.nn.gelu, key=k2)
        self.slots = eqx.nn.MLP(3 * k + width // 4 + 1, size, width, 2, activation=jax.nn.gelu, key=k1)
        self.time_scale, self.value_scale = time_scale, value_scale

    def __call__(self, times: Any, values: Any, mask: Any) -> Any:
        y = jnp.log(jnp.maximum(values, 1e-3 * self.value_scale) / self.value_scale)
        weight = mask.astype(y.dtype)
        gap = jnp.abs(times[:, None] - self.visits[None, :])  # (n_obs, k)
        gap = jnp.where(weight[:, None] > 0, gap, jnp.inf)
        nearest = jnp.argmin(gap, axis=0)  # the observation nearest each visit
        present = jnp.isfinite(jnp.min(gap, axis=0)) & (
            jnp.argmin(gap, axis=1)[nearest] == jnp.arange(self.visits.size)
        )
        present = present.astype(y.dtype)
        shift = (times[nearest] - self.visits) / self.time_scale
        slot_features = jnp.concatenate([y[nearest] * present, shift * present, present])
        tokens = jnp.stack([times / self.time_scale, y], axis=-1)
        pooled = jnp.sum(jax.vmap(self.phi)(tokens) * weight[:, None], axis=0) / jnp.maximum(jnp.sum(weight), 1.0)
        count = jnp.sum(weight)[None] / self.visits.size
        return self.slots(jnp.concatenate([slot_features, pooled, count]))


class _Estimator(eqx.Module):
    """One embedding and one conditional flow."""

    embedding: SeriesEmbedding
    flow: Any

    def log_prob(self, z: Any, times: Any, values: Any, mask: Any) -> Any:
        condition = jax.vmap(self.embedding)(times, values, mask)
        return paramax.unwrap(self.flow).log_prob(z, condition)

    def sample(self, key: Any, n: int, times: Any, values: Any, mask: Any) -> Any:
        condition = self.embedding(times, values, mask)
        return paramax.unwrap(self.flow).sample(key, (n,), condition)


@dataclass(frozen=True)
class NPESettings:
    """Network and training settings of :class:`AmortizedPosterior`."""

    n_simulations: int = 20_000
    n_flows: int = 1
    flow_layers: int = 5
    knots: int = 8
    width: int = 64
    embedding_size: int = 16
    learning_rate: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 150
    patience: int = 15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_simulations < 100 or self.n_flows < 1 or self.max_epochs < 1 or self.batch_size < 8:
            raise InputError(
                "NPESettings needs n_simulations >= 100, n_flows >= 1, max_epochs >= 1 and batch_size >= 8; "
                f"got {self.n_simulations}, {self.n_flows}, {self.max_epochs}, {self.batch_size}."
            )


def _new_estimator(key: Any, dim: int, design: ObservationDesign, settings: NPESettings, value_scale: float) -> Any:
    k_embed, k_flow = jax.random.split(key)
    spacing = float(np.min(np.diff(np.r_[0.0, design.times])))
    embedding = SeriesEmbedding(
        k_embed,
        visits=np.asarray(design.times),
        time_scale=max(design.jitter, spacing / 4),
        value_scale=value_scale,
        width=settings.width,
        size=settings.embedding_size,
    )
    flow = masked_autoregressive_flow(
        k_flow,
        base_dist=Normal(jnp.zeros(dim)),
        transformer=RationalQuadraticSpline(knots=settings.knots, interval=5.0),
        cond_dim=settings.embedding_size,
        flow_layers=settings.flow_layers,
        nn_width=settings.width,
    )
    return _Estimator(embedding, flow)


@eqx.filter_jit
def _draw(estimator: _Estimator, keys: Any, times: Any, values: Any, mask: Any, size: int) -> Any:
    """``size`` draws for each of a batch of series (compiled once per estimator and shape)."""
    return jax.vmap(lambda k, t, y, m: estimator.sample(k, size, t, y, m))(keys, times, values, mask)


def _is_frozen(leaf: Any) -> bool:
    return isinstance(leaf, paramax.NonTrainable)


_ADAM = optax.scale_by_adam()  # one instance: the compiled training step is shared by every flow of a process


def _loss(params: Any, static: Any, *batch: Any) -> Any:
    return -jnp.mean(eqx.combine(params, static).log_prob(*batch))


@eqx.filter_jit
def _step(params: Any, static: Any, state: Any, learning_rate: Any, *batch: Any) -> tuple[Any, Any, Any]:
    """One Adam step at ``learning_rate`` (a traced scalar: the cosine schedule's value at
    this step, so flows of any budget reuse the compiled step of their architecture)."""
    value, grads = jax.value_and_grad(_loss)(params, static, *batch)
    updates, state = _ADAM.update(grads, state, params)
    updates = jax.tree.map(lambda u: -learning_rate.astype(u.dtype) * u, updates)
    return optax.apply_updates(params, updates), state, value


_val_loss = eqx.filter_jit(_loss)


def _train(
    estimator: _Estimator, data: tuple[np.ndarray, ...], settings: NPESettings, seed: int, label: str
) -> tuple[_Estimator, list[float], list[float]]:
    """Maximum likelihood with Adam; keeps the parameters of the best validation epoch."""
    rng = np.random.default_rng(seed)
    n = data[0].shape[0]
    order = rng.permutation(n)
    n_val = max(n // 10, 1)
    val, train = order[:n_val], order[n_val:]
    params, static = eqx.partition(estimator, eqx.is_inexact_array, is_leaf=_is_frozen)
    n_batches = max(train.size // settings.batch_size, 1)
    total_steps = settings.max_epochs * n_batches
    schedule = optax.cosine_decay_schedule(settings.learning_rate, total_steps, alpha=0.05)
    rates = np.asarray(schedule(np.arange(total_steps)), dtype=np.float64)
    opt_state = _ADAM.init(params)
    val_batch = tuple(jnp.asarray(a[val]) for a in data)
    best, best_loss, since_best = params, math.inf, 0
    history: tuple[list[float], list[float]] = ([], [])
    for epoch in track(range(settings.max_epochs), description=label, transient=True, disable=not progress_shown()):
        shuffled = rng.permutation(train)
        total = 0.0
        for b in range(n_batches):
            idx = shuffled[b * settings.batch_size : (b + 1) * settings.batch_size]
            rate = jnp.asarray(rates[epoch * n_batches + b])
            params, opt_state, value = _step(params, static, opt_state, rate, *(jnp.asarray(a[idx]) for a in data))
            total += float(value)
        history[0].append(total / n_batches)
        history[1].append(float(_val_loss(params, static, *val_batch)))
        if history[1][-1] < best_loss - 1e-4:
            best, best_loss, since_best = params, history[1][-1], 0
        else:
            since_best += 1
            if since_best >= settings.patience:
                break
    return eqx.combine(best, static), history[0], history[1]


@dataclass
class AmortizedPosterior:
    """Neural posterior estimation for one model, prior and observation design.

    Arguments:
        model: the mechanistic model.
        parameters: which log-parameters are inferred (:class:`ParameterMap`; the prior's names).
        prior: the population prior on those log-parameters.
        design: how observations are made (:class:`ObservationDesign`).
        settings: network and training settings (:class:`NPESettings`).

    ``fit()`` simulates ``settings.n_simulations`` patients and trains; then
    ``posterior(times, values, n=1000)`` returns a :class:`Posterior` for one patient.

    Example:
        >>> npe = AmortizedPosterior(model, pmap, prior, design).fit()  # doctest: +SKIP
        >>> npe.posterior(times, values).interval(0.9)  # doctest: +SKIP
    """

    model: Any
    parameters: ParameterMap
    prior: GaussianPrior
    design: ObservationDesign
    settings: NPESettings = field(default_factory=NPESettings)
    estimators_: list[_Estimator] | None = field(default=None, init=False)
    history_: list[dict[str, list[float]]] = field(default_factory=list, init=False)
    manifest_: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if tuple(self.parameters.names) != tuple(self.prior.names):
            raise InputError(
                f"The parameter map fits {list(self.parameters.names)} but the prior is over "
                f"{list(self.prior.names)}; use the same names in the same order."
            )
        if self.design.observable not in self.model.observable_names:
            raise InputError(
                f"ObservationDesign.observable {self.design.observable!r} is not an observable of "
                f"'{self.model.id}' ({list(self.model.observable_names)})."
            )
        if self.design.noise is None:  # the observable's declared noise (refused if it declares none)
            self.design = self.design.for_model(self.model)

    @property
    def dim(self) -> int:
        return len(self.prior.names)

    def simulate(self, n: int, seed: int, progress: bool = False) -> SimulatedSeries:
        return simulate_observations(
            self.model, self.parameters, self.prior, self.design, n, seed=seed, progress=progress
        )

    def fit(self, data: SimulatedSeries | None = None) -> AmortizedPosterior:
        """Simulate the training set (unless given) and train ``n_flows`` estimators."""
        s = self.settings
        data = data or self.simulate(s.n_simulations, seed=s.seed, progress=True)
        z = (data.log_theta - self.prior.mean) @ np.linalg.inv(self.prior.chol).T
        arrays = (z, data.times, data.values, data.mask)
        value_scale = float(np.median(data.values[data.mask]))
        self.estimators_, self.history_ = [], []
        for k in range(s.n_flows):
            key = jax.random.key(s.seed * 1000 + k)
            est = _new_estimator(key, self.dim, self.design, s, value_scale)
            est, train_loss, val_loss = _train(est, arrays, s, s.seed * 1000 + k, f"training flow {k + 1}/{s.n_flows}")
            self.estimators_.append(est)
            self.history_.append({"train_loss": train_loss, "validation_loss": val_loss})
        self.manifest_ = self._manifest(data)
        return self

    def _manifest(self, data: SimulatedSeries) -> dict[str, Any]:
        s = self.settings
        return {
            "kind": "amortized-posterior",
            "format_version": FORMAT_VERSION,
            "model": {"id": self.model.id, "version": self.model.version},
            "parameters": {"names": list(self.parameters.names), "base": self.parameters.base.tolist()},
            "prior": self.prior.to_dict(),
            "design": self.design.to_dict(),
            "settings": s.__dict__,
            "simulation_budget": {
                "requested": s.n_simulations,
                "used": int(data.log_theta.shape[0]),
                "failed": data.failed,
            },
            "seed": s.seed,
            "final_validation_loss": [h["validation_loss"][-1] for h in self.history_],
            "epochs": [len(h["train_loss"]) for h in self.history_],
        }

    # --- inference ---------------------------------------------------------
    def _require(self) -> list[_Estimator]:
        if not self.estimators_:
            raise NotFittedError("This AmortizedPosterior is not trained; call fit() or AmortizedPosterior.load().")
        return self.estimators_

    def _padded(self, times: Any, values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        y = np.asarray(values, dtype=np.float64).reshape(-1)
        if t.size == 0 or t.size != y.size or not np.all(np.isfinite(y)) or not np.all(np.isfinite(t)):
            raise InputError(
                f"An amortized posterior needs matching, finite times and values (>= 1 observation); "
                f"got {t.size} times and {y.size} values."
            )
        size = max(len(self.design.times), 1 << (t.size - 1).bit_length())
        pad = size - t.size
        return np.pad(t, (0, pad)), np.pad(y, (0, pad), constant_values=1.0), np.r_[np.ones(t.size), np.zeros(pad)]

    def sample_z(self, key: Any, n: int, times: Any, values: Any) -> np.ndarray:
        """``n`` standardized draws for one patient (an equal mixture over the ensemble)."""
        t, y, m = self._padded(times, values)
        return self.sample_z_batch(key, n, t[None], y[None], m[None])[0]

    def sample_z_batch(self, key: Any, n: int, times: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``n`` standardized draws for each of many padded series ``(m, k)``: ``(m, n, dim)``."""
        estimators = self._require()
        counts = np.bincount(np.arange(n) % len(estimators), minlength=len(estimators))
        args = (jnp.asarray(times), jnp.asarray(values), jnp.asarray(mask, dtype=jnp.float64))
        parts = [
            np.asarray(_draw(est, jax.random.split(jax.random.fold_in(key, i), times.shape[0]), *args, int(c)))
            for i, (est, c) in enumerate(zip(estimators, counts, strict=True))
            if c
        ]
        return np.concatenate(parts, axis=1)

    def posterior(self, times: Any, values: Any, n: int = 1000, seed: int = 0) -> Posterior:
        """The amortized posterior of one patient's log-parameters (``n`` draws)."""
        z = self.sample_z(jax.random.key(seed), n, times, values)
        log_theta = self.prior.mean + z @ self.prior.chol.T
        extra = {"n_flows": len(self._require())}
        return Posterior(self.prior.names, log_theta[None], "npe", extra=extra, transform=self.parameters.values)

    def log_prob(self, log_theta: np.ndarray, times: Any, values: Any) -> np.ndarray:
        """Log-density of log-parameter vectors ``(n, k)`` under one patient's posterior."""
        estimators = self._require()
        z = (np.atleast_2d(log_theta) - self.prior.mean) @ np.linalg.inv(self.prior.chol).T
        t, y, m = self._padded(times, values)
        batch = (jnp.asarray(z), *(jnp.broadcast_to(jnp.asarray(a), (z.shape[0], a.size)) for a in (t, y, m)))
        dens = jnp.stack([e.log_prob(*batch) for e in estimators])
        log_det = np.sum(np.log(np.diag(self.prior.chol)))
        return np.asarray(jax.nn.logsumexp(dens, axis=0) - math.log(len(estimators))) - log_det

    # --- persistence --------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trained estimators and their manifest to directory ``path`` (atomically per file)."""
        estimators = self._require()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        for k, est in enumerate(estimators):
            write_atomic(out / f"flow-{k}.eqx", lambda tmp, e=est: eqx.tree_serialise_leaves(tmp, e))
        manifest = {**self.manifest_, "files": [f"flow-{k}.eqx" for k in range(len(estimators))],
                    "value_scale": estimators[0].embedding.value_scale}  # fmt: skip
        write_atomic(out / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2)))
        return out

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model: Any | None = None, inputs: Inputs | None = None
    ) -> AmortizedPosterior:
        """Rebuild a saved estimator; the model is looked up in the registry unless given.
        A design with a treatment needs the same ``inputs`` again (the manifest holds their text)."""
        from twinloop.models import get

        folder = Path(path)
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("kind") != "amortized-posterior":
            raise InputError(f"{folder} does not hold an amortized posterior (manifest kind {manifest.get('kind')!r}).")
        model = model or get(manifest["model"]["id"])
        if model.version != manifest["model"]["version"]:
            raise InputError(
                f"{folder} was trained on {model.id} version {manifest['model']['version']}, "
                f"but the model is version {model.version}; retrain it."
            )
        prior = GaussianPrior.from_dict(manifest["prior"])
        pmap = ParameterMap(model, tuple(manifest["parameters"]["names"]), np.asarray(manifest["parameters"]["base"]))
        d = manifest["design"]
        from twinloop.calibrate.noise import NoiseModel

        inputs = inputs or Inputs()
        if repr(inputs) != d["inputs"]:
            raise InputError(
                f"{folder} was trained under the inputs {d['inputs']}; pass the same plan as inputs=... to load it."
            )
        noise = NoiseModel(**d["noise"])
        design = ObservationDesign(
            d["observable"], tuple(d["times"]), d["jitter"], d["missing"], d["resolution"], noise, inputs
        )
        settings = NPESettings(**manifest["settings"])
        npe = cls(model, pmap, prior, design, settings)
        skeleton = _new_estimator(jax.random.key(0), npe.dim, design, settings, manifest["value_scale"])
        npe.estimators_ = [eqx.tree_deserialise_leaves(folder / f, skeleton) for f in manifest["files"]]
        npe.manifest_ = manifest
        return npe
