"""Neural surrogates: an MLP emulating a model's outputs over a population.

Inputs are the log-parameters standardized by the training sample; outputs (scalar
outcomes or whole trajectories, one column each) are standardized too. Trained with
Adam (optax) on simulated cohorts; ``accuracy_`` holds R-squared and the largest
absolute error per output on held-out simulations, and ``speedup_`` the ratio of
engine time to surrogate time for the same patients. Results that use a surrogate
should carry ``accuracy_`` beside them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from twinloop._atomic import write_atomic
from twinloop.errors import InputError, NotFittedError

FORMAT_VERSION = 1


@eqx.filter_jit
def _apply(network: Any, x: Any) -> Any:
    return jax.vmap(network)(x)


@dataclass
class Surrogate:
    """Emulate ``outputs = f(log-parameters)``.

    Arguments:
        names: the input parameter names.
        outputs: the output names.
        width, depth: the MLP's size.
        steps, learning_rate, batch_size: Adam settings.
        holdout: the share of simulations held out for the accuracy report.
        seed: initialization and split seed.
    """

    names: tuple[str, ...]
    outputs: tuple[str, ...]
    width: int = 64
    depth: int = 3
    steps: int = 3000
    learning_rate: float = 3e-3
    batch_size: int = 256
    holdout: float = 0.2
    seed: int = 0
    network_: Any = field(default=None, init=False)
    scales_: dict[str, np.ndarray] = field(default_factory=dict, init=False)
    accuracy_: dict[str, dict[str, float]] = field(default_factory=dict, init=False)
    speedup_: float | None = field(default=None, init=False)
    training_: dict[str, Any] = field(default_factory=dict, init=False)

    def fit(self, log_theta: np.ndarray, values: np.ndarray, *, manifest: dict[str, Any] | None = None) -> Surrogate:
        """Train on ``(n, k)`` log-parameters and ``(n, m)`` outputs; report held-out accuracy.
        ``manifest`` describes the training simulations (model, prior, times) for provenance."""
        x, y = np.asarray(log_theta, dtype=float), np.asarray(values, dtype=float)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(self.names):
            raise InputError(
                f"Surrogate.fit needs log_theta (n, {len(self.names)}) and values (n, {len(self.outputs)}); "
                f"got {x.shape} and {y.shape}."
            )
        ok = np.all(np.isfinite(y), axis=1)
        x, y = x[ok], y[ok]
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(x.shape[0])
        n_test = max(int(self.holdout * x.shape[0]), 1)
        test, train = order[:n_test], order[n_test:]
        self.scales_ = {"x_mean": x[train].mean(0), "x_sd": x[train].std(0) + 1e-12,
                        "y_mean": y[train].mean(0), "y_sd": y[train].std(0) + 1e-12}  # fmt: skip
        xs, ys = self._scale_x(x), (y - self.scales_["y_mean"]) / self.scales_["y_sd"]
        net = eqx.nn.MLP(x.shape[1], y.shape[1], self.width, self.depth, activation=jax.nn.gelu,
                         key=jax.random.key(self.seed))  # fmt: skip
        schedule = optax.cosine_decay_schedule(self.learning_rate, self.steps, alpha=0.01)
        optimizer = optax.adam(schedule)
        state = optimizer.init(eqx.filter(net, eqx.is_inexact_array))

        @eqx.filter_jit
        def step(model: Any, s: Any, xb: Any, yb: Any) -> tuple[Any, Any]:
            grads = eqx.filter_grad(lambda m: jnp.mean((jax.vmap(m)(xb) - yb) ** 2))(model)
            updates, s = optimizer.update(grads, s, eqx.filter(model, eqx.is_inexact_array))
            return eqx.apply_updates(model, updates), s

        for _ in range(self.steps):
            idx = rng.choice(train, size=min(self.batch_size, train.size), replace=False)
            net, state = step(net, state, jnp.asarray(xs[idx]), jnp.asarray(ys[idx]))
        self.network_ = net
        self.training_ = {**(manifest or {}), "n_simulations": int(x.shape[0]), "n_dropped": int((~ok).sum())}
        predicted = self.predict(x[test])
        self.accuracy_ = {
            name: {
                "r2": float(
                    1 - np.sum((predicted[:, j] - y[test, j]) ** 2) / np.sum((y[test, j] - y[test, j].mean()) ** 2)
                ),
                "max_abs_error": float(np.max(np.abs(predicted[:, j] - y[test, j]))),
                "n_test": int(test.size),
            }
            for j, name in enumerate(self.outputs)
        }
        return self

    def _scale_x(self, x: np.ndarray) -> np.ndarray:
        return (x - self.scales_["x_mean"]) / self.scales_["x_sd"]

    def predict(self, log_theta: np.ndarray) -> np.ndarray:
        """Emulated outputs ``(n, m)`` for log-parameters ``(n, k)``."""
        if self.network_ is None:
            raise NotFittedError("This Surrogate is not fitted; call fit(log_theta, values) first.")
        out = _apply(self.network_, jnp.asarray(self._scale_x(np.atleast_2d(log_theta))))
        return np.asarray(out) * self.scales_["y_sd"] + self.scales_["y_mean"]

    def measure_speedup(self, simulate: Callable[[np.ndarray], Any], log_theta: np.ndarray) -> float:
        """Engine time over surrogate time for the same patients (both compiled for them first)."""
        simulate(log_theta)
        self.predict(log_theta)
        t0 = time.perf_counter()
        simulate(log_theta)
        engine = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.predict(log_theta)
        emulated = time.perf_counter() - t0
        self.speedup_ = engine / max(emulated, 1e-9)
        return self.speedup_

    def _settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the network and a manifest (settings, scales, accuracy, speed-up, training data)."""
        if self.network_ is None:
            raise NotFittedError("This Surrogate is not fitted; nothing to save.")
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "surrogate.eqx", lambda tmp: eqx.tree_serialise_leaves(tmp, self.network_))
        manifest = {
            "kind": "surrogate",
            "format_version": FORMAT_VERSION,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in self._settings().items()},
            "scales": {k: v.tolist() for k, v in self.scales_.items()},
            "accuracy": self.accuracy_,
            "speedup": self.speedup_,
            "training": self.training_,
            "files": ["surrogate.eqx"],
        }
        write_atomic(out / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2)))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Surrogate:
        """Rebuild a saved surrogate with its accuracy report."""
        folder = Path(path)
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("kind") != "surrogate":
            raise InputError(f"{folder} does not hold a surrogate (manifest kind {manifest.get('kind')!r}).")
        settings = manifest["settings"]
        sur = cls(**{**settings, "names": tuple(settings["names"]), "outputs": tuple(settings["outputs"])})
        skeleton = eqx.nn.MLP(len(sur.names), len(sur.outputs), sur.width, sur.depth, activation=jax.nn.gelu,
                              key=jax.random.key(0))  # fmt: skip
        sur.network_ = eqx.tree_deserialise_leaves(folder / "surrogate.eqx", skeleton)
        sur.scales_ = {k: np.asarray(v) for k, v in manifest["scales"].items()}
        sur.accuracy_, sur.speedup_, sur.training_ = manifest["accuracy"], manifest["speedup"], manifest["training"]
        return sur
