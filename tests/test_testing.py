"""``twinloop.testing.check_model``: the backends are compared over the horizon a model's
dynamics allow, so a chaotic model (Lorenz-63, declared from outside twinloop) passes
where a fixed long scenario made two correct solvers disagree."""

from __future__ import annotations

import dataclasses
import math
import re

import jax.numpy as jnp
import pytest

import twinloop as tl
from twinloop.models.base import Model, Observable, Parameter, State
from twinloop.models.profile import ModelProfile
from twinloop.testing import check_model, comparison_horizon, perturbation_growth

LORENZ_LYAPUNOV = (
    0.9056  # largest Lyapunov exponent at sigma=10, rho=28, beta=8/3 (Sprott, Chaos and Time-Series Analysis, 2003)
)


def _lorenz_rhs(t, x, u, p):
    return jnp.stack(
        [
            p["sigma"] * (x[1] - x[0]),
            x[0] * (p["rho"] - x[2]) - x[1],
            x[0] * x[1] - p["beta"] * x[2],
        ]
    )


def _lorenz(t_end: float = 20.0) -> Model:
    return Model(
        id="lorenz-63",
        version="1",
        name="Lorenz-63",
        description="The Lorenz system of convection rolls: chaotic at the classical parameters.",
        time_unit="1",
        states=tuple(State(n, "1", nonnegative=False) for n in "xyz"),
        parameters=(
            Parameter("sigma", "1", 10.0, 5.0, 20.0),
            Parameter("rho", "1", 28.0, 20.0, 40.0),
            Parameter("beta", "1", 8.0 / 3.0, 1.0, 4.0),
        ),
        inputs=(),
        observables=tuple(
            Observable(n, "1", fn=lambda x, p, i=i: x[i], nonnegative=False) for i, n in enumerate("xyz")
        ),
        rhs=_lorenz_rhs,
        initial_state=lambda p: jnp.stack([1.0 + 0 * p["sigma"], 1.0 + 0 * p["sigma"], 20.0 + 0 * p["sigma"]]),
        standard_scenario=lambda p: (tl.Inputs(), t_end),
        references=("Lorenz EN (1963). Deterministic nonperiodic flow. J Atmos Sci 20:130-141.",),
    )


def test_a_chaotic_model_is_compared_over_its_predictable_horizon() -> None:
    lorenz = _lorenz()
    # over the whole scenario two correct solvers part ways (what check_model did before)
    whole = check_model(lorenz, checks=["jit_and_vmap"], horizon=20.0, raise_on_failure=False)[0]
    assert not whole.passed and "differ by" in whole.detail
    # over the chosen horizon they agree; it ends where a 1e-6 solver error has grown 100-fold,
    # about ln(100) / lambda = 5.1 time units for the system's Lyapunov exponent (finite-time growth varies)
    chosen = check_model(lorenz, checks=["jit_and_vmap"])[0]
    found = re.search(r"over 0 to ([0-9.]+) 1 \(errors grow more than 100-fold after", chosen.detail)
    assert chosen.passed and found, chosen.detail
    expected = math.log(100) / LORENZ_LYAPUNOV
    assert 0.3 * expected < float(found.group(1)) < 3 * expected, chosen.detail


def test_perturbation_growth_is_bounded_for_a_stable_model(pk) -> None:
    times, growth = perturbation_growth(pk)
    assert times[0] == 0.0 and times[-1] == 72.0 and growth.shape == times.shape
    assert growth.max() < 1.0  # a linear, dissipative model forgets its initial state: the whole scenario is compared


def test_a_declared_horizon_is_used_and_checked(pk) -> None:
    declared = dataclasses.replace(pk, profile=ModelProfile(check_horizon=2.0))
    assert comparison_horizon(declared) == (2.0, "declared by the model")
    result = check_model(declared, checks=["jit_and_vmap"])[0]
    assert result.passed and "over 0 to 2 h (declared by the model)" in result.detail
    with pytest.raises(tl.ModelError, match=r"check_horizon must be > 0"):
        ModelProfile(check_horizon=-1)


def test_unknown_check_names_are_refused(pk) -> None:
    with pytest.raises(tl.InputError, match=r"checks \['speed'\] are not model checks"):
        check_model(pk, checks=["speed"])


def test_the_models_alias_is_the_testing_function() -> None:
    assert tl.models.check_model is check_model
