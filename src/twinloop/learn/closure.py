"""Learned closure terms: a small neural network inside a mechanistic right-hand side.

A :class:`Closure` declares what the network sees (named features with units and
scales), where its output goes (one state's derivative), the output's bounds and unit,
and an optional mechanistic *gate* it multiplies (e.g. the core's own kill term, so a
learned fraction of it is given back). ``hybrid_model(core, closure, network)`` is a
:class:`~twinloop.models.Model` like any other: the engine, ``check_model``,
calibration and twins use it unchanged (a universal differential equation; Rackauckas
et al. 2020).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from twinloop.errors import ModelError
from twinloop.models.base import Model, ParamMap
from twinloop.models.profile import ClosureFeature as Feature  # one network input (declared with the model)
from twinloop.models.profile import FeatureFn

REFERENCE = (
    "Rackauckas C, Ma Y, Martensen J, et al. Universal differential equations for scientific machine learning. "
    "arXiv:2001.04385 (2020)."
)


@dataclass(frozen=True)
class Closure:
    """The declaration of a learned term added to ``d(target)/dt``.

    The term is ``gate(t, x, u, p) * (lower + (upper - lower) * sigmoid(network(features)))``
    in ``unit`` (the target's unit per model time unit when there is no gate).
    """

    name: str
    target: str
    features: tuple[Feature, ...]
    unit: str
    lower: float
    upper: float
    gate: FeatureFn | None = None
    gate_description: str = ""
    width: int = 16
    depth: int = 2
    description: str = ""

    def __post_init__(self) -> None:
        if not self.features:
            raise ModelError(f"Closure '{self.name}' declares no features; give at least one.")
        if not self.upper > self.lower:
            raise ModelError(f"Closure '{self.name}' needs upper > lower; got [{self.lower}, {self.upper}].")

    def network(self, key: Any) -> eqx.nn.MLP:
        """A fresh network for this closure (tanh hidden layers, one scalar output)."""
        return eqx.nn.MLP(len(self.features), "scalar", self.width, self.depth, activation=jnp.tanh, key=key)

    def bounded(self, network: Any, features: Any) -> Any:
        """The bounded network output for feature rows ``(..., n_features)``."""
        flat = features.reshape(-1, features.shape[-1])
        raw = jax.vmap(network)(flat).reshape(features.shape[:-1])
        return self.lower + (self.upper - self.lower) * jax.nn.sigmoid(raw)

    def features_at(self, t: Any, x: Any, u: Any, p: ParamMap) -> Any:
        """Scaled feature rows ``(*batch, n_features)`` for the batch-last state ``x``."""
        shape = jnp.shape(x)[1:]
        cols = [
            jnp.broadcast_to(jnp.asarray(f.fn(t, x, u, p), dtype=jnp.float64), shape) / f.scale for f in self.features
        ]
        return jnp.stack(cols, axis=-1)

    def term(self, network: Any, t: Any, x: Any, u: Any, p: ParamMap) -> Any:
        """The closure's contribution to ``d(target)/dt``."""
        out = self.bounded(network, self.features_at(t, x, u, p))
        return out if self.gate is None else self.gate(t, x, u, p) * out


def network_digest(network: Any) -> str:
    """A short content hash of a network's weights (part of the hybrid model's version)."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(network, eqx.is_array))
    digest = hashlib.sha256()
    for leaf in leaves:
        digest.update(np.asarray(leaf, dtype=np.float64).tobytes())
    return digest.hexdigest()[:12]


def hybrid_model(core: Model, closure: Closure, network: Any, *, digest: str | None = None) -> Model:
    """The core model with the closure term added to its target state's derivative."""
    if closure.target not in core.state_names:
        raise ModelError(
            f"Closure '{closure.name}' targets state '{closure.target}', which model '{core.id}' does not "
            f"have ({list(core.state_names)})."
        )
    index = core.state_names.index(closure.target)

    def rhs(t: Any, x: Any, u: Any, p: ParamMap) -> Any:
        return core.rhs(t, x, u, p).at[index].add(closure.term(network, t, x, u, p))

    version = f"{core.version}+{digest or network_digest(network)}"
    note = (
        f"\n\nHybrid: d({closure.target})/dt gains the learned term '{closure.name}' ({closure.unit}), "
        f"a network of {', '.join(f.name for f in closure.features)} bounded to [{closure.lower}, {closure.upper}]"
        + (f", multiplying {closure.gate_description}" if closure.gate is not None else "")
        + "."
    )
    return replace(
        core,
        id=f"{core.id}+{closure.name}",
        version=version,
        name=f"{core.name} + learned {closure.name}",
        description=core.description + note,
        rhs=rhs,
        references=(*core.references, REFERENCE),
    )
