"""A calibration problem: which parameters are unknown, what was observed, under which inputs.

``ParameterMap`` turns the fitted parameters' unconstrained values (each on its declared
scale, log or linear) into the model's full parameter vector (the others held at a base
vector; derived parameters recomputed, so a T1D patient stays at its basal steady state).
``CalibrationProblem`` adds the observations (model time, observable, value), the
inputs, the noise and, for a restart mid-stream, a known initial state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from twinloop.calibrate.noise import NoiseModel, noise_for
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.simulate.engine import SolverSettings, observable_function


@dataclass(frozen=True)
class ParameterMap:
    """Fitted unconstrained values -> full parameter vectors of ``model``.

    Each fitted parameter is treated on its declared scale (``Parameter.scale``). With
    ``bounded=False`` a fitted value is the parameter's logarithm (``"log"``) or the
    value itself (``"linear"``). With ``bounded=True`` it is an unconstrained ``z``
    mapped into the parameter's declared bounds: ``log p = log lo + (log hi - log lo) *
    sigmoid(z)`` (the same logit on the value itself for a linear parameter), so no
    value of ``z`` can leave the physiological box. ``names`` may be empty: nothing is
    fitted (state-only assimilation).
    """

    model: Model
    names: tuple[str, ...]
    base: np.ndarray
    bounded: bool = False

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in self.model.parameter_names]
        derived = [n for n in self.names if n in self.model.derived_parameters]
        if unknown:
            raise InputError(
                f"Cannot fit {unknown}: not parameters of '{self.model.id}' ({list(self.model.parameter_names)})."
            )
        if derived:
            raise InputError(f"Cannot fit {derived}: they are derived from the other parameters of '{self.model.id}'.")
        object.__setattr__(self, "base", np.asarray(self.base, dtype=np.float64).reshape(-1))

    @property
    def latent(self) -> dict[str, Any]:
        if self.model.latent is None:
            return {}
        return {k: float(v) for k, v in self.model.latent(self.model.param_map(self.base)).items()}

    @property
    def bounds(self) -> np.ndarray:
        """``(k, 2)`` declared lower and upper bounds of the fitted parameters."""
        declared = {p.name: (p.lower, p.upper) for p in self.model.parameters}
        return np.array([declared[n] for n in self.names], dtype=np.float64).reshape(-1, 2)

    @property
    def scales(self) -> tuple[str, ...]:
        """The declared scale (``"log"`` or ``"linear"``) of each fitted parameter."""
        declared = {p.name: p.scale for p in self.model.parameters}
        return tuple(declared[n] for n in self.names)

    def _on_log(self) -> np.ndarray:
        return np.array([s == "log" for s in self.scales], dtype=bool)

    def _scales(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per fitted parameter: whether it is on the log scale, and the bounds on that scale."""
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        on_log = self._on_log()
        low = np.where(on_log, np.log(np.where(on_log, lo, 1.0)), lo)
        high = np.where(on_log, np.log(np.where(on_log, hi, 1.0)), hi)
        return on_log, low, high

    def values(self, theta: Any) -> Any:
        """The fitted parameters' own values from unconstrained ``theta`` (NumPy or JAX, ``(..., k)``)."""
        xp = jnp if isinstance(theta, jax.Array) else np
        on_log, low, high = self._scales()
        scaled = theta if not self.bounded else low + (high - low) / (1.0 + xp.exp(-theta))
        return xp.where(on_log, xp.exp(xp.where(on_log, scaled, 0.0)), scaled)  # no exp of a linear value

    def unconstrain(self, values: np.ndarray, margin: float = 1e-6) -> np.ndarray:
        """The inverse of :meth:`values` (NumPy); values on or beyond a bound are pulled just inside."""
        values = np.asarray(values, dtype=np.float64)
        on_log = self._on_log()
        scaled = np.where(on_log, np.log(np.maximum(values, 1e-300)), values)
        if not self.bounded:
            if np.any(on_log & (values <= 0)):
                bad = self.names[int(np.argwhere(np.broadcast_to(on_log, values.shape) & (values <= 0))[0, -1])]
                raise InputError(f"Parameter {bad!r} is on the log scale but takes a value <= 0; it has no logarithm.")
            return scaled
        _, low, high = self._scales()
        u = np.clip((scaled - low) / (high - low), margin, 1.0 - margin)
        return np.log(u) - np.log1p(-u)

    def full(self, theta: Any) -> Any:
        """One full parameter vector (JAX-traceable) from ``(k,)`` fitted values."""
        values: dict[str, Any] = dict(self.model.param_map(jnp.asarray(self.base)))
        fitted = self.values(jnp.asarray(theta, dtype=jnp.float64))
        for i, name in enumerate(self.names):
            values[name] = fitted[i]
        values = self.model.rederive(values, self.latent)
        return jnp.stack([jnp.asarray(values[p], dtype=jnp.float64) for p in self.model.parameter_names])

    def full_batch(self, theta: np.ndarray) -> np.ndarray:
        """``(n, P)`` full parameter vectors from ``(n, k)`` fitted values (NumPy)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        values: dict[str, Any] = {
            p: np.full(theta.shape[0], v) for p, v in zip(self.model.parameter_names, self.base, strict=True)
        }
        fitted = self.values(theta)
        for i, name in enumerate(self.names):
            values[name] = fitted[:, i]
        values = self.model.rederive(values, self.latent)
        return np.stack([np.asarray(values[p], dtype=np.float64) for p in self.model.parameter_names], axis=1)

    def inside_box(self, theta: np.ndarray) -> np.ndarray:
        """``(n,)``: whether every full parameter (derived ones included) of each row lies
        within the model's declared bounds, i.e. the member is physiologically valid."""
        full = self.full_batch(theta)
        lo = np.array([p.lower for p in self.model.parameters])
        hi = np.array([p.upper for p in self.model.parameters])
        return np.all(np.isfinite(full) & (full >= lo) & (full <= hi), axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fit": list(self.names),
            "base": self.base.tolist(),
            "bounded": self.bounded,
            "scales": list(self.scales),
        }


def reverse_via_forward(fn: Any) -> Any:
    """``fn`` with a reverse-mode rule computed from its forward-mode Jacobian.

    The batched engine's adaptive loops are only forward-differentiable; with few
    fitted parameters the full Jacobian (one JVP per parameter) is cheap, and this
    makes the predictor usable by reverse-mode code (SVI, NUTS's default)."""

    @jax.custom_vjp
    def wrapped(theta: Any) -> Any:
        return fn(theta)

    def forward(theta: Any) -> tuple[Any, Any]:
        y, jac = fn(theta), jax.jacfwd(fn)(theta)
        return y, jac

    def backward(jac: Any, cotangent: Any) -> tuple[Any]:
        return (cotangent @ jac,)

    wrapped.defvjp(forward, backward)
    return wrapped


@dataclass(frozen=True)
class CalibrationProblem:
    """What one patient's calibration needs.

    Arguments:
        model: the mechanistic model.
        parameters: how the fitted parameters fill the full vector (:class:`ParameterMap`).
        times: model times of the observations (from the twin's origin).
        observables: the observable of each observation (names of ``model.observables``).
        values: the observed values, in the observables' units.
        inputs: the inputs over the observation span, in model time.
        noise: per-observable noise (default: each observable's declared noise).
        initial_state: the known state at time 0 (a restart, passed to the engine as
            ``y0``); the model's rule if None.
        settings: solver settings (tolerances).
    """

    model: Model
    parameters: ParameterMap
    times: np.ndarray
    observables: tuple[str, ...]
    values: np.ndarray
    inputs: Inputs = field(default_factory=Inputs)
    noise: Mapping[str, NoiseModel] = field(default_factory=dict)
    initial_state: np.ndarray | None = None
    settings: SolverSettings = field(default_factory=lambda: SolverSettings(rtol=1e-5, atol=1e-6))

    def __post_init__(self) -> None:
        times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if times.size == 0:
            raise InputError("A calibration needs at least one observation; got none.")
        if len(self.observables) != times.size or values.size != times.size:
            raise InputError("times, observables and values of a calibration problem must have the same length.")
        unknown = sorted(set(self.observables) - set(self.model.observable_names))
        if unknown:
            raise InputError(
                f"Observed variables {unknown} are not observables of '{self.model.id}' "
                f"({list(self.model.observable_names)}); map them with a code map."
            )
        if np.any(times < 0) or not np.all(np.isfinite(values)):
            raise InputError("Observation times must be >= 0 (after the start) and values finite.")
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)

    @property
    def output_times(self) -> np.ndarray:
        """The distinct observation times, with 0 prepended if absent (the engine needs two)."""
        t = np.unique(self.times)
        return t if t[0] == 0.0 and t.size > 1 else np.unique(np.r_[0.0, t])

    def predictor(self) -> Any:
        """``theta -> predicted values (n_obs,)`` as a pure JAX function (``theta``: the
        fitted parameters' unconstrained values, see :class:`ParameterMap`)."""
        model = self.model
        pmap = self.parameters
        t_out = self.output_times
        row = jnp.asarray(np.searchsorted(t_out, self.times))
        col = jnp.asarray([model.observable_names.index(o) for o in self.observables])
        run = observable_function(model, self.inputs, t_out, self.settings, y0=self.initial_state)

        def predict(theta: Any) -> Any:
            return run(pmap.full(theta))[row, col]

        return reverse_via_forward(predict)

    def noise_sd_fns(self) -> Sequence[NoiseModel]:
        return [noise_for(self.model, o, self.noise) for o in self.observables]

    def noise_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-observation (additive, proportional) noise coefficients."""
        models = self.noise_sd_fns()
        return np.array([m.additive for m in models]), np.array([m.proportional for m in models])
