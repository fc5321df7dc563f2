"""Checking a learn job spec whole, before anything is simulated or written.

``check_posterior``, ``check_surrogate`` and ``check_closure`` read the mapping of
a YAML job spec (``examples/learn/*.yaml``) with the command-line overrides merged
in, and refuse it with one :class:`~twinloop.errors.InputError` naming the field,
the value, what was expected and the fix: unknown keys, wrong types, sizes that are
not finite, not positive or past the explicit limits (:data:`LIMITS`, with the
memory a larger size would need), unknown models, parameters, observables and
closures. They return the spec with its numbers normalized, so the jobs can trust it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

from twinloop.errors import InputError, TwinloopError

# the largest size each field accepts (a guard against typos such as 2e10, not a model limit)
LIMITS: dict[str, int] = {
    "n_simulations": 1_000_000,
    "steps": 1_000_000,
    "max_epochs": 10_000,
    "patience": 10_000,
    "sbc_simulations": 100_000,
    "sbc_draws": 100_000,
    "times": 10_000,
    "grid": 1_000_000,
}
MAX_DURATION = 1e7  # model time units
MAX_SEED = 2**32 - 1
# the command-line options that override a field
OPTIONS = {"settings.n_simulations": "--simulations", "settings.max_epochs": "--epochs",
           "n_simulations": "--simulations", "steps": "--steps"}  # fmt: skip

_CORE = ("name", "parameters", "population", "base", "treatment", "duration", "prior_seed")
_NPE = ("n_simulations", "n_flows", "flow_layers", "knots", "width", "embedding_size", "learning_rate",
        "batch_size", "max_epochs", "patience", "seed")  # fmt: skip
KEYS: dict[str, tuple[str, ...]] = {
    "posterior spec": (*_CORE, "model", "design", "settings", "checks"),
    "posterior spec.design": ("observable", "times", "jitter", "missing", "resolution", "noise"),
    "posterior spec.settings": _NPE,
    "posterior spec.checks": ("sbc_simulations", "sbc_draws"),
    "surrogate spec": (
        *_CORE,
        "model",
        "observable",
        "times",
        "transform",
        "n_simulations",
        "seed",
        "width",
        "depth",
        "steps",
        "learning_rate",
        "batch_size",
    ),
    "closure spec": (*_CORE, "closure", "observable", "data", "noise", "steps", "learning_rate", "seed"),
    "noise": ("additive", "proportional", "lower", "upper"),
}


def _fix(field: str) -> str:
    option = OPTIONS.get(field.split(" ", 1)[-1].split("spec.", 1)[-1])
    return f"Fix it in the spec{f' or with {option}' if option else ''}."


def refuse(where: str, key: str, value: Any, expected: str) -> InputError:
    """The error for ``where.key`` holding ``value`` where ``expected`` was expected."""
    field = f"{where}.{key}" if key else where
    shown = repr(dict(value) if isinstance(value, Mapping) else value)
    shown = shown if len(shown) <= 80 else f"{shown[:77]}..."
    return InputError(f"{field} is {shown}; expected {expected}. {_fix(field)}")


def mapping(where: str, raw: Any, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``raw`` as a mapping with text keys, each one of ``keys`` (default: ``KEYS[where]``)."""
    if not isinstance(raw, Mapping):
        raise refuse(where, "", raw, "a mapping (key: value lines)")
    allowed = KEYS[where] if keys is None else keys
    for key in raw:
        if not isinstance(key, str) or key not in allowed:
            raise InputError(
                f"{where} has the unknown key {str(key)[:60]!r}; the keys it accepts are {', '.join(allowed)}. "
                "Remove or rename it."
            )
    return dict(raw)


def integer(where: str, key: str, value: Any, lo: int, hi: int) -> int:
    """A whole number in ``[lo, hi]`` (``2000`` or ``2000.0``, not ``true`` nor ``'2000'``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or int(value) != value or not lo <= value <= hi:
        raise refuse(where, key, value, f"a whole number from {lo} to {hi}")
    return int(value)


def number(where: str, key: str, value: Any, lo: float, hi: float, *, open_lo: bool = False) -> float:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > hi or value < lo or (open_lo and value == lo):
        low = f"> {lo:g}" if open_lo else f">= {lo:g}"
        raise refuse(where, key, value, f"a finite number {low} and <= {hi:g}")
    return float(value)


def text(where: str, key: str, value: Any, choices: list[str] | None = None) -> str:
    """A non-empty string, one of ``choices`` when given."""
    if not isinstance(value, str) or not value.strip() or (choices is not None and value not in choices):
        raise refuse(where, key, value, f"one of {', '.join(choices)}" if choices else "a non-empty text")
    return value


def required(spec: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in spec:
        raise InputError(f"{where} needs '{key}'; it has {', '.join(map(str, spec)) or 'no keys'}. Add it.")
    return spec[key]


def times(where: str, key: str, raw: Any, *, positive: bool) -> list[float]:
    """A list of increasing times, or ``{start, stop, every}`` (at most ``LIMITS['times']`` of them)."""
    import numpy as np

    cap = LIMITS["times"]
    if isinstance(raw, Mapping):
        grid = mapping(f"{where}.{key}", raw, ("start", "stop", "every"))
        start, stop, every = (number(f"{where}.{key}", k, required(grid, k, f"{where}.{key}"), 0.0, MAX_DURATION)
                              for k in ("start", "stop", "every"))  # fmt: skip
        if every <= 0 or stop < start:
            raise refuse(where, key, grid, "every > 0 and stop >= start")
        if (stop - start) / every + 1 > cap:
            raise refuse(where, key, grid, f"at most {cap} times (make 'every' larger)")
        values = np.arange(start, stop + 1e-9, every).tolist()
    elif isinstance(raw, list) and 0 < len(raw) <= cap:
        values = [number(where, f"{key}[{i}]", t, 0.0, MAX_DURATION, open_lo=positive) for i, t in enumerate(raw)]
    else:
        raise refuse(where, key, raw, f"a list of 1 to {cap} numbers or a mapping {{start, stop, every}}")
    if positive and values and values[0] <= 0:
        raise refuse(where, key, values[0], "times > 0 (the first observation comes after the start)")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise refuse(where, key, raw, "strictly increasing times")
    return [float(v) for v in values]


def noise(where: str, raw: Any) -> dict[str, Any]:
    """A noise mapping: ``additive``/``proportional`` >= 0 (not both 0), optional ``lower`` < ``upper``."""
    spec = mapping(where, raw, KEYS["noise"])
    out: dict[str, Any] = {k: number(where, k, spec[k], 0.0, 1e9) for k in ("additive", "proportional") if k in spec}
    out |= {k: number(where, k, spec[k], -1e12, 1e12) for k in ("lower", "upper") if k in spec}
    from twinloop.calibrate.noise import NoiseModel

    try:
        NoiseModel(**out)  # not both scales 0, lower < upper
    except InputError as err:
        raise InputError(f"{where}: {err} Fix it in the spec.") from None
    return out


def _core(spec: dict[str, Any], where: str, model_id: Any) -> Any:
    """Check model, parameters, base, population, treatment and duration; return the model."""
    from twinloop.models.registry import available
    from twinloop.models.registry import get as get_model

    model = get_model(text(where, "model", model_id, available()))
    names = required(spec, "parameters", where)
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        raise refuse(where, "parameters", names, f"a list of distinct parameters of '{model.id}'")
    for i, name in enumerate(names):
        text(where, f"parameters[{i}]", name, list(model.parameter_names))
    base = spec.get("base") or {}
    if not isinstance(base, Mapping):
        raise refuse(where, "base", base, "a mapping of parameter: value")
    spec["base"] = {text(where, "base", k, list(model.parameter_names)): number(where, f"base.{k}", v, -1e12, 1e12)
                    for k, v in base.items()}  # fmt: skip
    spec["duration"] = number(where, "duration", spec.get("duration", 365.0), 0.0, MAX_DURATION, open_lo=True)
    spec["prior_seed"] = integer(where, "prior_seed", spec.get("prior_seed", 1), 0, MAX_SEED)
    if "name" in spec:
        text(where, "name", spec["name"])
    _population(spec, where, model.id)
    if spec.get("treatment"):
        _treatment(spec, where, model)
    return model


def _population(spec: dict[str, Any], where: str, model_id: str) -> None:
    from twinloop.products.spec import population_from

    raw = spec.get("population", "default")
    if not isinstance(raw, str | Mapping):
        raise refuse(where, "population", raw, "'default', a population YAML path or a mapping")
    try:
        population_from(raw, model_id)
    except TwinloopError as err:
        raise InputError(f"{where}.population: {err}") from None


def _treatment(spec: dict[str, Any], where: str, model: Any) -> None:
    """The treatment builds a plan (its own errors name the item)."""
    import pandas as pd

    from twinloop.products.treatments import build_plan, validate_treatment

    items = validate_treatment(f"{where}.treatment", spec["treatment"], model, spec["duration"])
    spec["treatment"] = items
    columns = model.param_map(model.default_parameters.copy()[:, None])
    try:
        build_plan(items, columns, pd.DataFrame(index=[0]), spec["duration"], model)
    except TwinloopError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise InputError(
            f"{where}.treatment is not a valid treatment ({type(err).__name__}: {str(err)[:120]}); "
            "see examples/learn/ for the keys each kind needs."
        ) from None


def _seed(spec: dict[str, Any], where: str, key: str = "seed") -> None:
    spec[key] = integer(where, key, spec.get(key, 0), 0, MAX_SEED)


def _size(where: str, key: str, value: Any, lo: int, limit: str, bytes_each: float) -> int:
    """A count with an explicit limit; past it, say how much memory it would need."""
    cap = LIMITS[limit]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and int(value) == value and value > cap:
        raise InputError(
            f"{where}.{key} is {value!r}; the largest accepted is {cap:,} (that many would need about "
            f"{value * bytes_each / 2**30:,.1f} GiB of memory). {_fix(f'{where}.{key}')}"
        )
    return integer(where, key, value, lo, cap)


# --- the three spec kinds -----------------------------------------------------
def check_posterior(raw: Any) -> dict[str, Any]:
    """The posterior (NPE) spec, checked whole; see :func:`check_surrogate` for the rules."""
    where = "posterior spec"
    spec = mapping(where, raw)
    model = _core(spec, where, required(spec, "model", where))
    d = mapping(f"{where}.design", required(spec, "design", where))
    text(f"{where}.design", "observable", required(d, "observable", f"{where}.design"), model.observable_names)
    d["times"] = times(f"{where}.design", "times", required(d, "times", f"{where}.design"), positive=True)
    d["jitter"] = number(f"{where}.design", "jitter", d.get("jitter", 0.0), 0.0, MAX_DURATION)
    d["missing"] = number(f"{where}.design", "missing", d.get("missing", 0.0), 0.0, 0.99)
    d["resolution"] = number(f"{where}.design", "resolution", d.get("resolution", 1.0), 0.0, MAX_DURATION,
                             open_lo=True)  # fmt: skip
    horizon = d["times"][-1] + 3 * d["jitter"]
    if horizon / d["resolution"] > LIMITS["grid"]:
        raise refuse(f"{where}.design", "resolution", d["resolution"],
                     f"a step that puts at most {LIMITS['grid']:,} points on the horizon {horizon:g}")  # fmt: skip
    if "noise" in d:
        d["noise"] = noise(f"{where}.design.noise", d["noise"])
    spec["design"] = d
    spec["settings"] = _npe_settings(f"{where}.settings", spec.get("settings") or {}, len(d["times"]))
    checks = mapping(f"{where}.checks", spec.get("checks") or {})
    for key, default in (("sbc_simulations", 300), ("sbc_draws", 100)):
        checks[key] = integer(f"{where}.checks", key, checks.get(key, default), 1, LIMITS[key])
    spec["checks"] = checks
    return spec


def _npe_settings(where: str, raw: Any, n_times: int) -> dict[str, Any]:
    s = mapping(where, raw)
    bounds = {"n_flows": (1, 16), "flow_layers": (1, 64), "knots": (2, 256), "width": (1, 4096),
              "embedding_size": (1, 1024), "batch_size": (8, 65_536)}  # fmt: skip
    out: dict[str, Any] = {k: integer(where, k, s[k], *bounds[k]) for k in bounds if k in s}
    if "n_simulations" in s:
        out["n_simulations"] = _size(where, "n_simulations", s["n_simulations"], 100, "n_simulations",
                                     8.0 * (4 * n_times + 16))  # fmt: skip
    for key in ("max_epochs", "patience"):
        if key in s:
            out[key] = integer(where, key, s[key], 1, LIMITS[key])
    if "learning_rate" in s:
        out["learning_rate"] = number(where, "learning_rate", s["learning_rate"], 0.0, 1.0, open_lo=True)
    if "seed" in s:
        out["seed"] = integer(where, "seed", s["seed"], 0, MAX_SEED)
    return out


def check_surrogate(raw: Any) -> dict[str, Any]:
    """The surrogate spec, checked whole: known keys only, a registered model, its parameters
    and observable, increasing finite times, sizes within :data:`LIMITS`."""
    where = "surrogate spec"
    spec = mapping(where, raw)
    model = _core(spec, where, required(spec, "model", where))
    text(where, "observable", required(spec, "observable", where), model.observable_names)
    spec["times"] = times(where, "times", required(spec, "times", where), positive=False)
    spec["transform"] = text(where, "transform", spec.get("transform", "log"), ["log", "none"])
    per_patient = 8.0 * (len(spec["times"]) + 1) * (len(model.states) + 2)
    spec["n_simulations"] = _size(where, "n_simulations", spec.get("n_simulations", 4000), 10, "n_simulations",
                                  per_patient)  # fmt: skip
    bounds = {"width": (1, 4096), "depth": (1, 64), "batch_size": (1, 65_536)}
    for key, (lo, hi) in bounds.items():
        if key in spec:
            spec[key] = integer(where, key, spec[key], lo, hi)
    if "steps" in spec:
        spec["steps"] = integer(where, "steps", spec["steps"], 1, LIMITS["steps"])
    if "learning_rate" in spec:
        spec["learning_rate"] = number(where, "learning_rate", spec["learning_rate"], 0.0, 1.0, open_lo=True)
    _seed(spec, where)
    return spec


def check_closure(raw: Any) -> dict[str, Any]:
    """The closure spec, checked whole (its ``data`` CSV is read by the job, from the spec's folder)."""
    from twinloop.learn.closures import available
    from twinloop.learn.closures import get as get_closure

    where = "closure spec"
    spec = mapping(where, raw)
    core_id, _ = get_closure(text(where, "closure", required(spec, "closure", where), available()))
    model = _core(spec, where, core_id)
    if "observable" in spec:
        text(where, "observable", spec["observable"], model.observable_names)
    data = required(spec, "data", where)
    text(where, "data", data)
    if "noise" in spec:
        spec["noise"] = noise(f"{where}.noise", spec["noise"])
    spec["steps"] = integer(where, "steps", spec.get("steps", 300), 1, LIMITS["steps"])
    spec["learning_rate"] = number(where, "learning_rate", spec.get("learning_rate", 0.05), 0.0, 1.0, open_lo=True)
    _seed(spec, where)
    return spec
