"""Global sensitivity analysis of a scalar outcome with SALib: Sobol indices
(Saltelli sampling) and Morris elementary effects.

The inputs are parameters of a model. Their ranges come from a population (each
varied parameter log-normal with the population's typical value and variance,
independent: SALib's Sobol estimators assume independent inputs) or from explicit
bounds (uniform). The outcome is any function from an ``(n, n_params)`` parameter
matrix to ``n`` values, e.g. :func:`simulated_outcome`, or :func:`emulated_outcome`
when a trained surrogate stands in for the engine; then the surrogate's held-out
accuracy travels with the result (``SensitivityResult.emulator``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from SALib.analyze import morris as morris_analyze
from SALib.analyze import sobol as sobol_analyze
from SALib.sample import morris as morris_sample
from SALib.sample import sobol as sobol_sample

from twinloop.cohort.population import Population, statistic
from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
from twinloop.simulate import simulate

Outcome = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SensitivityResult:
    """Indices per varied parameter (a DataFrame) with the sample size behind them."""

    method: str
    indices: pd.DataFrame
    n_evaluations: int
    emulator: dict[str, Any] | None = None

    def ranking(self, column: str | None = None) -> list[str]:
        col = column or ("ST" if self.method == "sobol" else "mu_star")
        return list(self.indices.sort_values(col, ascending=False).index)

    def provenance(self) -> str:
        """Where the outcome values came from, in words (the surrogate's accuracy when emulated)."""
        if self.emulator is None:
            return f"{self.n_evaluations} evaluations of the outcome (no emulator)"
        e = self.emulator
        return (
            f"{self.n_evaluations} evaluations emulated by a surrogate of '{e['output']}' "
            f"(held-out R2 {e['r2']:.4f}, max abs error {e['max_abs_error']:.3g} on {e['n_test']} simulations)"
        )


class EmulatedOutcome:
    """An outcome computed by a trained :class:`~twinloop.learn.Surrogate` instead of the engine.

    The surrogate maps log-parameters (its ``names``) to outputs; ``output`` picks one.
    With ``model``, the outcome takes full parameter matrices (natural scale) and picks
    the surrogate's columns; without, it takes the ``(N, k)`` input matrix in the
    surrogate's parameter order. ``accuracy`` is the surrogate's held-out report for it.
    """

    def __init__(self, surrogate: Any, output: str, model: Model | None = None) -> None:
        if output not in surrogate.outputs:
            raise InputError(f"The surrogate emulates {list(surrogate.outputs)}; there is no output {output!r}.")
        if not surrogate.accuracy_:
            raise InputError("The surrogate has no held-out accuracy report; fit it (or load a fitted one) first.")
        self.surrogate, self.output, self.model = surrogate, output, model
        self.accuracy = {"output": output, **surrogate.accuracy_[output]}

    def __call__(self, params: np.ndarray) -> np.ndarray:
        values = np.asarray(params, dtype=np.float64)
        if self.model is not None:
            values = values[:, [self.model.parameter_names.index(n) for n in self.surrogate.names]]
        if values.shape[1] != len(self.surrogate.names):
            raise InputError(
                f"The surrogate takes {list(self.surrogate.names)}; got a matrix with {values.shape[1]} columns."
            )
        return self.surrogate.predict(np.log(values))[:, self.surrogate.outputs.index(self.output)]


def emulated_outcome(surrogate: Any, output: str, model: Model | None = None) -> EmulatedOutcome:
    """An :class:`EmulatedOutcome` (use it where :func:`simulated_outcome` would go)."""
    return EmulatedOutcome(surrogate, output, model)


def problem_from_population(population: Population, vary: Sequence[str]) -> dict[str, Any]:
    """A SALib problem: each parameter log-normal with the population's typical value
    (first group) and its variance in Omega (or +-50 % uniform when it has none)."""
    group = population.groups[0]
    dists, bounds = [], []
    for name in vary:
        if name not in group.typical:
            raise InputError(f"Parameter '{name}' has no typical value in population '{population.name}'.")
        if name in population.omega.names:
            i = population.omega.names.index(name)
            dists.append("lognorm")
            bounds.append([math.log(group.typical[name]), math.sqrt(population.omega.matrix[i, i])])
        else:
            dists.append("unif")
            bounds.append([0.5 * group.typical[name], 1.5 * group.typical[name]])
    return {"num_vars": len(vary), "names": list(vary), "bounds": bounds, "dists": dists}


def problem_from_bounds(bounds: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    return {"num_vars": len(bounds), "names": list(bounds), "bounds": [list(map(float, b)) for b in bounds.values()]}


def _embed(model: Model | None, names: Sequence[str], values: np.ndarray, base: np.ndarray | None) -> np.ndarray:
    if model is None:
        return values
    matrix = np.tile(base if base is not None else model.default_parameters, (len(values), 1))
    for j, name in enumerate(names):
        matrix[:, model.parameter_names.index(name)] = values[:, j]
    return matrix


def sobol(
    outcome: Outcome,
    problem: Mapping[str, Any],
    *,
    n: int = 1024,
    model: Model | None = None,
    base: np.ndarray | None = None,
    seed: int = 0,
) -> SensitivityResult:
    """First-order (S1) and total (ST) Sobol indices with bootstrap confidence intervals.

    Derived parameters (e.g. a basal steady state) keep their ``base`` values: vary
    parameters that do not enter them, or sample whole patients from a population.

    ``n`` base samples give ``n * (k + 2)`` outcome evaluations for ``k`` inputs. With
    ``model``, the outcome receives full parameter matrices (others at ``base`` or the
    model defaults); without, it receives the ``(N, k)`` input matrix itself.
    """
    values = sobol_sample.sample(dict(problem), n, calc_second_order=False, seed=seed)
    y = np.asarray(outcome(_embed(model, problem["names"], values, base)), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sobol_analyze.analyze(dict(problem), y, calc_second_order=False, seed=seed)
    table = pd.DataFrame({k: res[k] for k in ("S1", "S1_conf", "ST", "ST_conf")}, index=problem["names"])
    return SensitivityResult("sobol", table, len(y), getattr(outcome, "accuracy", None))


def morris(
    outcome: Outcome,
    problem: Mapping[str, Any],
    *,
    trajectories: int = 50,
    levels: int = 4,
    model: Model | None = None,
    base: np.ndarray | None = None,
    seed: int = 0,
) -> SensitivityResult:
    """Morris screening: ``mu_star`` (mean absolute elementary effect) and ``sigma``."""
    values = morris_sample.sample(dict(problem), trajectories, num_levels=levels, seed=seed)
    y = np.asarray(outcome(_embed(model, problem["names"], values, base)), dtype=np.float64)
    res = morris_analyze.analyze(dict(problem), values, y, num_levels=levels, seed=seed)
    table = pd.DataFrame({k: res[k] for k in ("mu", "mu_star", "sigma", "mu_star_conf")}, index=problem["names"])
    return SensitivityResult("morris", table, len(y), getattr(outcome, "accuracy", None))


def simulated_outcome(
    model: Model,
    plan: Inputs | Callable[[Mapping[str, np.ndarray]], Inputs],
    times: np.ndarray,
    observable: str,
    stat: str = "mean",
) -> Outcome:
    """``params -> statistic(observable)`` by simulating each parameter vector under
    ``plan`` (an :class:`Inputs`, or a function of the parameter columns)."""

    def outcome(params: np.ndarray) -> np.ndarray:
        inputs = plan(model.param_map(params.T)) if callable(plan) else plan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traj = simulate(model, params, inputs, times=times, progress=False, chunk_size=min(4096, len(params)))
        return statistic(traj[observable], stat)

    return outcome
