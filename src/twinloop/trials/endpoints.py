"""Baseline measures and endpoints of a trial: what is computed from each participant's observations.

A **measure** summarises one observation protocol's readings within a time window (model time;
baseline measures default to ``[0, 0]``, the baseline visit): ``first``, ``last``, ``mean``,
``median``, ``min``, ``max``, ``sd`` (sample SD, ``ddof=1``), ``nearest`` (the reading nearest ``at``;
the earlier on a tie) or ``between`` (percent of readings within ``range: [lo, hi]``, ends included).
NaN readings (missed, after dropout) are ignored; a participant without a reading in the window
gets NaN.

An **endpoint** is one of
* ``measure`` (continuous): a summary as above over the whole follow-up unless ``window`` is given,
  optionally as the change from a baseline measure (``baseline: NAME``): absolute (``relative:
  false``, the default), in percent of the baseline (``relative: true``: ``100 (y - y0) / y0``; NaN
  where the baseline is 0) or as the natural log ratio to the baseline (``relative: log``:
  ``log(y / y0)``, near normal where the measure grows or shrinks exponentially, e.g. tumour size;
  NaN where the value or the baseline is not positive);
* ``response`` (binary, 0.0/1.0): ``recist: PROTOCOL`` is RECIST 1.1 objective response (best overall
  response CR or PR, :func:`twinloop.products.outcomes.recist`). Participants whose response cannot be
  evaluated (NE: one scan only, dropout before the first follow-up scan) count as non-responders,
  the intention-to-treat convention; only a participant without any scan gets NaN. ``of: ENDPOINT``
  with ``above: x`` (value > x) or ``below: x`` (value < x) thresholds a continuous endpoint; a
  missing value stays missing;
* ``time_to_event``: ``recist: PROTOCOL`` is progression (RECIST PD) at the first PD scan, censored at
  the last scan; ``observation: PROTOCOL`` with ``below: x`` or ``above: x`` is the first reading beyond
  the threshold (strictly), censored at the last reading. Times are model time from time 0 (the
  randomization), NaN with no reading at all; ``window`` keeps the readings within it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from twinloop.errors import InputError
from twinloop.trials.context import EndpointKind, SpecContext
from twinloop.trials.randomize import check_keys

SUMMARIES = ("first", "last", "mean", "median", "min", "max", "sd", "nearest", "between")
KINDS: dict[str, EndpointKind] = {"measure": "continuous", "response": "binary", "time_to_event": "time_to_event"}
SUMMARY_KEYS = {"observation", "summary", "window", "at", "range"}
ENDPOINT_KEYS = {
    "measure": SUMMARY_KEYS | {"kind", "baseline", "relative"},
    "response": {"kind", "recist", "of", "above", "below"},
    "time_to_event": {"kind", "recist", "observation", "above", "below", "window"},
}
Data = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""Each protocol's ``(times, values)``, both ``(n, k)``, NaN-padded, times in model units."""


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{where} must be a finite number; got {value!r}.")
    return float(value)


def _pair(where: str, value: Any, example: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InputError(f"{where} must be a list [start, end] such as {example}; got {value!r}.")
    lo, hi = _number(f"{where}[0]", value[0]), _number(f"{where}[1]", value[1])
    if lo > hi:
        raise InputError(f"{where} is {list(value)}; its start must not be after its end.")
    return lo, hi


def _protocol(where: str, value: Any, ctx: SpecContext) -> str:
    if value not in ctx.protocols:
        raise InputError(f"{where} is {value!r}; it must name an observation protocol, one of {list(ctx.protocols)}.")
    return str(value)


def _mapping(where: str, raw: Any, example: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be a mapping such as {example}; got {raw!r}.")
    return raw


def _threshold(where: str, raw: Mapping[str, Any]) -> tuple[str, float]:
    sides = [k for k in ("above", "below") if k in raw]
    if len(sides) != 1:
        raise InputError(f"{where} needs exactly one of 'above' or 'below' (a threshold); got {sides or 'neither'}.")
    return sides[0], _number(f"{where}.{sides[0]}", raw[sides[0]])


@dataclass(frozen=True)
class Measure:
    """A summary of one protocol's readings within a window (see the module docstring)."""

    observation: str
    summary: str = "first"
    window: tuple[float, float] | None = (0.0, 0.0)
    at: float | None = None
    range: tuple[float, float] | None = None

    @classmethod
    def parse(
        cls, where: str, name: str, raw: Any, ctx: SpecContext, *, window: tuple[float, float] | None = (0.0, 0.0)
    ) -> Measure:
        """Validate the measure ``name`` of the section ``where``; ``window`` is the default window."""
        path = f"{where}.{name}"
        raw = _mapping(path, raw, "{observation: ct, summary: first}")
        check_keys(path, raw, SUMMARY_KEYS)
        observation = _protocol(f"{path}.observation", raw.get("observation"), ctx)
        summary = raw.get("summary", "first")
        if summary not in SUMMARIES:
            raise InputError(f"{path}.summary must be one of {', '.join(SUMMARIES)}; got {summary!r}.")
        if ("at" in raw) != (summary == "nearest"):
            raise InputError(f"{path}.at (a time) is needed with summary nearest, and only with it.")
        if ("range" in raw) != (summary == "between"):
            raise InputError(f"{path}.range ([lo, hi]) is needed with summary between, and only with it.")
        at = _number(f"{path}.at", raw["at"]) if "at" in raw else None
        span = _pair(f"{path}.range", raw["range"], "[70, 180]") if "range" in raw else None
        if "window" in raw:
            window = _pair(f"{path}.window", raw["window"], "[140, 196]")
        if at is not None and window is not None and not window[0] <= at <= window[1]:
            raise InputError(f"{path}.at ({at:g}) must lie within {path}.window {list(window)}.")
        return cls(observation, summary, window, at, span)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"observation": self.observation, "summary": self.summary}
        if self.window is not None:
            out["window"] = list(self.window)
        if self.at is not None:
            out["at"] = self.at
        if self.range is not None:
            out["range"] = list(self.range)
        return out

    def compute(self, data: Data) -> np.ndarray:
        """The measure per participant (float, NaN without a reading in the window)."""
        times, values = _arrays(data, self.observation)
        return summarise(times, values, self.summary, window=self.window, at=self.at, span=self.range)


@dataclass(frozen=True)
class Endpoint:
    """A validated endpoint (see the module docstring); ``kind`` is measure, response or time_to_event."""

    kind: str
    measure: Measure | None = None
    baseline: str | None = None
    relative: bool | str = False
    recist: str | None = None
    of: str | None = None
    observation: str | None = None
    side: str | None = None
    threshold: float | None = None
    window: tuple[float, float] | None = None

    @property
    def kind_of(self) -> EndpointKind:
        """The analysis kind: continuous, binary or time_to_event."""
        return KINDS[self.kind]

    @classmethod
    def parse(cls, where: str, name: str, raw: Any, ctx: SpecContext) -> Endpoint:
        """Validate the endpoint ``name`` of the section ``where`` against ``ctx`` (protocols, baseline
        measures and, for ``of``, the other endpoints' kinds in ``ctx.endpoints``)."""
        path = f"{where}.{name}"
        raw = _mapping(path, raw, "{kind: measure, observation: ct, summary: last}")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise InputError(f"{path}.kind must be one of {', '.join(KINDS)}; got {kind!r}.")
        check_keys(path, raw, ENDPOINT_KEYS[kind])
        if kind == "measure":
            return cls._measure(where, name, raw, ctx)
        if "recist" in raw:
            extra = sorted(set(raw) & {"of", "observation", "above", "below"})
            if extra:
                raise InputError(f"{path}: 'recist' cannot be combined with {extra}; give one definition.")
            window = _pair(f"{path}.window", raw["window"], "[0, 364]") if "window" in raw else None
            return cls(kind, recist=_protocol(f"{path}.recist", raw["recist"], ctx), window=window)
        side, threshold = _threshold(path, raw)
        if kind == "response":
            return cls(kind, of=_source(f"{path}.of", name, raw.get("of"), ctx), side=side, threshold=threshold)
        window = _pair(f"{path}.window", raw["window"], "[0, 10080]") if "window" in raw else None
        observation = _protocol(f"{path}.observation", raw.get("observation"), ctx)
        return cls(kind, observation=observation, side=side, threshold=threshold, window=window)

    @classmethod
    def _measure(cls, where: str, name: str, raw: Mapping[str, Any], ctx: SpecContext) -> Endpoint:
        path = f"{where}.{name}"
        summary = {k: v for k, v in raw.items() if k in SUMMARY_KEYS}
        measure = Measure.parse(where, name, summary, ctx, window=None)
        base = raw.get("baseline")
        if base is not None and base not in ctx.baselines:
            raise InputError(
                f"{path}.baseline is {base!r}; it must name a baseline measure, one of {list(ctx.baselines)}."
            )
        relative = raw.get("relative", False)
        if not isinstance(relative, bool) and relative != "log":
            raise InputError(
                f"{path}.relative must be true (percent of the baseline), false (absolute change) or "
                f"'log' (log ratio to the baseline); got {relative!r}."
            )
        if relative and base is None:
            raise InputError(f"{path}.relative needs {path}.baseline (the measure the change is relative to).")
        return cls("measure", measure=measure, baseline=base, relative=relative)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.measure is not None:
            out.update(self.measure.to_dict())
        if self.baseline is not None:
            out.update(baseline=self.baseline, relative=self.relative)
        if self.recist is not None:
            out["recist"] = self.recist
        if self.of is not None:
            out["of"] = self.of
        if self.observation is not None:
            out["observation"] = self.observation
        if self.side is not None:
            out[self.side] = self.threshold
        if self.window is not None:
            out["window"] = list(self.window)
        return out


def _source(where: str, name: str, of: Any, ctx: SpecContext) -> str:
    if of == name:
        raise InputError(f"{where} is {of!r}, the endpoint itself (a cycle); name a continuous endpoint.")
    if of not in ctx.endpoints:
        raise InputError(f"{where} is {of!r}; it must name another endpoint, one of {list(ctx.endpoints)}.")
    if ctx.endpoints[of] != "continuous":
        raise InputError(
            f"{where} is {of!r}, a {ctx.endpoints[of]} endpoint; a threshold response needs a continuous "
            "(kind measure) endpoint, which cannot refer to others (so no cycle)."
        )
    return str(of)


def parse_measures(where: str, raw: Any, ctx: SpecContext) -> dict[str, Measure]:
    """The ``baseline`` section: ``{name: measure}`` (None: no baseline measures)."""
    if raw is None:
        return {}
    raw = _mapping(where, raw, "{sld_baseline: {observation: ct, summary: first}}")
    return {str(name): Measure.parse(where, _name(where, name), value, ctx) for name, value in raw.items()}


def parse_endpoints(where: str, raw: Any, ctx: SpecContext, *, duration: float | None = None) -> dict[str, Endpoint]:
    """The ``endpoints`` section: ``{name: endpoint}``; ``of`` references are checked among them, and
    windows and ``at`` against the trial's ``duration`` (model time) when given."""
    raw = _mapping(where, raw, "{pfs: {kind: time_to_event, recist: ct}}")
    if not raw:
        raise InputError(f"{where} is empty; name at least one endpoint.")
    inner = replace(ctx, endpoints=endpoint_kinds(raw))
    out = {str(name): Endpoint.parse(where, _name(where, name), value, inner) for name, value in raw.items()}
    if duration is not None:
        _within(where, out, duration)
    return out


def _within(where: str, endpoints: Mapping[str, Endpoint], duration: float) -> None:
    """Refuse windows ending, or ``at`` times, after the trial's ``duration``."""
    for name, e in endpoints.items():
        window = e.measure.window if e.measure is not None else e.window
        at = e.measure.at if e.measure is not None else None
        if window is not None and window[1] > duration:
            raise InputError(
                f"{where}.{name}.window is {list(window)}; it must end by the trial's duration ({duration:g})."
            )
        if at is not None and at > duration:
            raise InputError(f"{where}.{name}.at is {at:g}; it must not be after the trial's duration ({duration:g}).")


def endpoint_kinds(raw: Any) -> dict[str, EndpointKind]:
    """Each endpoint's analysis kind from the raw ``endpoints`` section (unparsed; bad entries skipped)."""
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): KINDS[v["kind"]] for k, v in raw.items() if isinstance(v, Mapping) and v.get("kind") in KINDS}


def _name(where: str, name: Any) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise InputError(f"{where} has the name {name!r}; names must be identifiers such as sld_change.")
    return name


def _arrays(data: Data, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    if protocol not in data:
        raise InputError(f"No observations of the protocol '{protocol}' were given (have: {sorted(data)}).")
    times, values = (np.asarray(a, dtype=np.float64) for a in data[protocol])
    if times.shape != values.shape or values.ndim != 2:
        raise InputError(f"Protocol '{protocol}': times {times.shape} and values {values.shape} must be (n, k) alike.")
    return times, values


def measure_values(measures: Mapping[str, Measure], data: Data) -> pd.DataFrame:
    """One float column per measure, one row per participant (the order of ``data``'s rows)."""
    n = next(iter(data.values()))[1].shape[0] if data else 0
    return pd.DataFrame({name: m.compute(data) for name, m in measures.items()}, index=pd.RangeIndex(n))


def endpoint_values(endpoints: Mapping[str, Endpoint], data: Data, baseline: pd.DataFrame) -> pd.DataFrame:
    """Each endpoint's columns (``<name>``; time-to-event also ``<name>_event``), one row per participant."""
    n = len(baseline) if len(baseline.columns) else (next(iter(data.values()))[1].shape[0] if data else 0)
    out: dict[str, np.ndarray] = {}
    for name, e in sorted(endpoints.items(), key=lambda item: item[1].of is not None):  # sources first
        if e.kind == "measure":
            assert e.measure is not None
            out[name] = _change(e, e.measure.compute(data), baseline)
        elif e.of is not None:
            if e.of not in out:
                raise InputError(f"The endpoint '{name}' thresholds '{e.of}', which is not among the endpoints given.")
            out[name] = _beyond(out[e.of], e.side, e.threshold)
        elif e.recist is not None:
            response, time, event = recist_endpoints(*_arrays(data, e.recist), e.window)
            if e.kind == "response":
                out[name] = response
            else:
                out[name], out[f"{name}_event"] = time, event
        else:
            assert e.observation is not None
            out[name], out[f"{name}_event"] = crossing(*_arrays(data, e.observation), e.side, e.threshold, e.window)
    order = [c for name in endpoints for c in (name, f"{name}_event") if c in out]
    return pd.DataFrame({c: out[c] for c in order}, index=pd.RangeIndex(n))


def _change(e: Endpoint, value: np.ndarray, baseline: pd.DataFrame) -> np.ndarray:
    if e.baseline is None:
        return value
    if e.baseline not in baseline:
        raise InputError(f"The baseline measure '{e.baseline}' is not a column of the baseline table.")
    base = baseline[e.baseline].to_numpy(dtype=np.float64)
    if not e.relative:
        return value - base
    with np.errstate(divide="ignore", invalid="ignore"):
        if e.relative == "log":
            return np.where((base > 0) & (value > 0), np.log(value / base), np.nan)
        return np.where(base != 0, 100.0 * (value - base) / base, np.nan)


def _beyond(value: np.ndarray, side: str | None, threshold: float | None) -> np.ndarray:
    hit = value > threshold if side == "above" else value < threshold
    return np.where(np.isfinite(value), hit.astype(np.float64), np.nan)


def _valid(times: np.ndarray, values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    ok = np.isfinite(values) & np.isfinite(times)
    if window is not None:
        ok &= (times >= window[0]) & (times <= window[1])
    return ok


def summarise(
    times: np.ndarray,
    values: np.ndarray,
    summary: str,
    *,
    window: tuple[float, float] | None = None,
    at: float | None = None,
    span: tuple[float, float] | None = None,
) -> np.ndarray:
    """``summary`` of each row's readings within ``window`` (NaN where there is none)."""
    ok = _valid(times, values, window)
    count = ok.sum(axis=1)
    any_ = count > 0
    rows = np.arange(values.shape[0])
    if summary in ("first", "last", "nearest"):
        if summary == "nearest":
            distance = np.where(ok, np.abs(times - at), np.inf)
            closest = ok & (distance == distance.min(axis=1, keepdims=True))
            pick = np.argmin(np.where(closest, times, np.inf), axis=1)  # the earlier on a tie
        elif summary == "first":
            pick = np.argmin(np.where(ok, times, np.inf), axis=1)
        else:
            pick = np.argmax(np.where(ok, times, -np.inf), axis=1)
        return np.where(any_, values[rows, pick], np.nan)
    if summary == "between":
        assert span is not None
        inside = ok & (values >= span[0]) & (values <= span[1])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(any_, 100.0 * inside.sum(axis=1) / count, np.nan)
    return _reduce(values, ok, summary, count)


def _reduce(values: np.ndarray, ok: np.ndarray, summary: str, count: np.ndarray) -> np.ndarray:
    """mean, median, min, max or sd of each row's ``ok`` values (NaN for a row without any)."""
    any_ = count > 0
    if summary in ("min", "max"):
        fill = np.inf if summary == "min" else -np.inf
        return np.where(any_, getattr(np, summary)(np.where(ok, values, fill), axis=1), np.nan)
    if summary in ("mean", "sd"):
        mean = np.where(ok, values, 0.0).sum(axis=1) / np.maximum(count, 1)
        if summary == "mean":
            return np.where(any_, mean, np.nan)
        deviation = np.where(ok, values - mean[:, None], 0.0)
        square = np.einsum("ij,ij->i", deviation, deviation)
        return np.where(count > 1, np.sqrt(square / np.maximum(count - 1, 1)), np.nan)
    if summary != "median":
        raise InputError(f"Unknown summary {summary!r}; use one of {', '.join(SUMMARIES)}.")
    ordered = np.sort(np.where(ok, values, np.nan), axis=1)  # NaN sort last
    lo = np.take_along_axis(ordered, (np.maximum(count, 1)[:, None] - 1) // 2, axis=1)[:, 0]
    hi = np.take_along_axis(ordered, count[:, None] // 2, axis=1)[:, 0]
    return np.where(any_, (lo + hi) / 2.0, np.nan)


def crossing(
    times: np.ndarray,
    values: np.ndarray,
    side: str | None,
    threshold: float | None,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Time of the first reading strictly ``side`` (above/below) ``threshold``, else the last reading's
    time (censored); ``(time, event)``, time NaN without readings."""
    ok = _valid(times, values, window)
    hit = ok & ((values > threshold) if side == "above" else (values < threshold))
    event: np.ndarray = np.any(hit, axis=1)
    first = np.min(np.where(hit, times, np.inf), axis=1)
    last = np.max(np.where(ok, times, -np.inf), axis=1)
    time = np.where(event, first, np.where(ok.any(axis=1), last, np.nan))
    return time, event


def recist_endpoints(
    times: np.ndarray, sld: np.ndarray, window: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RECIST 1.1 per participant: ``(objective response 0/1, progression time, event)``.

    The rules of :func:`twinloop.products.outcomes.recist`, vectorized over participants: the first
    scan is the baseline; PD is at least 20 % and 5 mm over the nadir so far; a response is CR (below
    1 mm) or PR (at most 70 % of the baseline) at a scan before PD. (Stable disease and its minimum
    duration only tell SD from NE, both non-responses, so they do not enter here.) Response is NaN only
    without any scan; the time is model time of the first PD scan, else of the last scan."""
    ok = _valid(times, sld, window)
    order = np.argsort(np.where(ok, times, np.inf), axis=1, kind="stable")
    t = np.take_along_axis(times, order, axis=1)
    y = np.take_along_axis(sld, order, axis=1)
    ok = np.take_along_axis(ok, order, axis=1)
    count = ok.sum(axis=1)
    base = y[:, 0]
    nadir = base.copy()
    responded = np.zeros(y.shape[0], dtype=bool)
    event = np.zeros(y.shape[0], dtype=bool)
    time = np.where(count > 0, t[:, 0], np.nan)
    for j in range(1, y.shape[1]):
        yj = y[:, j]
        live = ok[:, j] & ~event
        with np.errstate(invalid="ignore"):
            progressed = live & (yj >= 1.2 * nadir) & (yj - nadir >= 5.0)
            rest = live & ~progressed
            responded |= rest & ((yj < 1.0) | (yj <= 0.7 * base))
        nadir = np.where(rest, np.minimum(nadir, yj), nadir)
        time = np.where(live, t[:, j], time)
        event |= progressed
    return np.where(count > 0, responded.astype(np.float64), np.nan), time, event
