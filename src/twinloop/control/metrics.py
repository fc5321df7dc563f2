"""Glucose-control metrics of a cohort: the international consensus CGM metrics, Kovatchev's
risk indices, hypoglycaemic events and the control-variability grid (CVGA), per patient;
confidence intervals over patients, by group, and paired comparisons of two controllers.

Pure numpy (and scipy for the paired tests): the metrics take ``(n, T)`` glucose in mg/dL at
the minutes ``(T,)`` it was read, one row per patient, whatever produced them.

References:
    Battelino T et al. (2019) Clinical targets for continuous glucose monitoring data
    interpretation: recommendations from the international consensus on time in range.
    Diabetes Care 42:1593-1603 (ranges, CV, GMI; GMI from Bergenstal et al. 2018).
    Kovatchev BP et al. (1997) Diabetes Care 20:1655; Clarke W, Kovatchev B (2009)
    Diabetes Technol Ther 11(S1):S45 (LBGI, HBGI: means over all readings).
    Danne T et al. (2017) Diabetes Care 40:1631 (a hypoglycaemic event: >= 15 consecutive
    minutes below the threshold; it ends after >= 15 consecutive minutes at or above it).
    Magni L et al. (2008) J Diabetes Sci Technol 2:630 (CVGA).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from twinloop.errors import InputError

EVENT_MIN = 15.0
"""Minutes below a threshold that begin a hypoglycaemic event, and above it that end one."""
RISK_RANGE_MG_DL = (20.0, 600.0)
"""The range Kovatchev's symmetrization was fitted on; readings outside are clipped to it, so
0 mg/dL (a patient who crashed) carries the largest low risk (~100) instead of no number."""
CVGA_MIN_CLIP = (50.0, 110.0)
CVGA_MAX_CLIP = (110.0, 400.0)
CVGA_ZONES = ("A", "Lower B", "Upper B", "B", "Lower C", "Upper C", "Lower D", "Upper D", "E")
# rows: max BG < 180, [180, 300), >= 300; columns: min BG > 90, (70, 90], <= 70 (simglucose's CVGA_analysis)
_CVGA_GRID = (("A", "Lower B", "Lower C"), ("Upper B", "B", "Lower D"), ("Upper C", "Upper D", "E"))
METRIC_UNITS = {
    "tir_70_180_pct": "%",
    "tbr_70_pct": "%",
    "tbr_54_pct": "%",
    "tar_180_pct": "%",
    "tar_250_pct": "%",
    "mean_mg_dl": "mg/dL",
    "sd_mg_dl": "mg/dL",
    "cv_pct": "%",
    "gmi_pct": "%",
    "lbgi": "1",
    "hbgi": "1",
    "hypo_events_70": "events",
    "hypo_events_54": "events",
    "hypo_event_min_70": "min",
    "hypo_event_min_54": "min",
    "cvga_min_mg_dl": "mg/dL",
    "cvga_max_mg_dl": "mg/dL",
}
"""The per-patient metrics :func:`glucose_metrics` returns, with their units."""


def _checked(glucose: Any, minutes: Any) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(glucose, dtype=np.float64)
    if g.ndim == 1:
        g = g[None, :]
    t = np.asarray(minutes, dtype=np.float64)
    if g.ndim != 2 or t.ndim != 1 or g.shape[1] != t.size or t.size == 0:
        raise InputError(
            f"glucose must be (patients, times) with one column per minute in `minutes`; got glucose of shape "
            f"{g.shape} and {t.size} minutes. Pass the array patient-first and the matching sample minutes."
        )
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise InputError("minutes must be finite and strictly increasing; sort the readings by time.")
    return g, t


def sample_minutes(minutes: Any) -> float:
    """The minutes one reading stands for: the median spacing of the readings (1 for one reading)."""
    t = np.asarray(minutes, dtype=np.float64)
    return float(np.median(np.diff(t))) if t.size > 1 else 1.0


def _percent(mask: np.ndarray, valid: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * (mask & valid).sum(axis=1) / valid.sum(axis=1)


def risk_indices(glucose: Any) -> tuple[np.ndarray, np.ndarray]:
    """Kovatchev's low and high blood glucose indices (LBGI, HBGI) per patient.

    ``f(BG) = 1.509 (ln(BG)^1.084 - 5.381)``, ``r = 10 f^2``; LBGI is the mean over *all*
    readings of ``r`` where ``f < 0`` (0 elsewhere), HBGI likewise for ``f > 0`` (Clarke and
    Kovatchev 2009). simglucose 0.2.11's ``risk_index`` averages each over its own side's
    readings only (its issue #38), so its values are ours times ``n / n_side``.

    Example:
        >>> risk_indices([[70.0, 200.0]])  # doctest: +SKIP
    """
    g = np.atleast_2d(np.asarray(glucose, dtype=np.float64))
    valid = np.isfinite(g)
    f = 1.509 * (np.log(np.clip(np.where(valid, g, 112.5), *RISK_RANGE_MG_DL)) ** 1.084 - 5.381)
    r = 10.0 * f**2
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        lbgi = np.where(valid & (f < 0), r, 0.0).sum(axis=1) / count
        hbgi = np.where(valid & (f > 0), r, 0.0).sum(axis=1) / count
    return lbgi, hbgi


def hypo_events(glucose: Any, minutes: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Hypoglycaemic events below ``threshold`` mg/dL per patient, and the minutes spent in them.

    An event begins once the readings have stayed below the threshold for ``EVENT_MIN`` (15)
    minutes and ends once they have stayed at or above it for 15 minutes; a shorter rise does
    not end it. Each reading stands for :func:`sample_minutes` minutes (15 readings a minute
    apart, 3 readings of a 5-minute CGM). Missing readings (NaN) neither begin nor end one. An
    event's duration runs from its first reading below the threshold to the first reading of
    the 15 minutes that end it (or the end of the record).
    """
    g, t = _checked(glucose, minutes)
    dt = sample_minutes(t)
    n = g.shape[0]
    below_run, above_run = np.zeros(n), np.zeros(n)
    in_event = np.zeros(n, dtype=bool)
    events, duration, run_start = np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
    for k in range(g.shape[1]):
        below = g[:, k] < threshold  # NaN is neither
        above = g[:, k] >= threshold
        run_start = np.where(below & (below_run == 0), t[k], run_start)
        below_run = np.where(below, below_run + dt, np.where(above, 0.0, below_run))
        above_run = np.where(above, above_run + dt, np.where(below, 0.0, above_run))
        begins = ~in_event & (below_run >= EVENT_MIN - 1e-9)
        events += begins
        duration -= np.where(begins, run_start, 0.0)
        in_event |= begins
        ends = in_event & (above_run >= EVENT_MIN - 1e-9)
        duration += np.where(ends, t[k] - above_run + dt, 0.0)
        in_event &= ~ends
    duration += np.where(in_event, t[-1] + dt, 0.0)
    return events, duration


def cvga_points(glucose: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per patient the 2.5th and 97.5th percentiles of glucose, clipped to [50, 110] and [110, 400]
    mg/dL as Magni et al. (2008) plot them (linear interpolation between readings, NaN skipped)."""
    g = np.atleast_2d(np.asarray(glucose, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a patient with no reading gives NaN
        low = np.nanpercentile(g, 2.5, axis=1)
        high = np.nanpercentile(g, 97.5, axis=1)
    return np.clip(low, *CVGA_MIN_CLIP), np.clip(high, *CVGA_MAX_CLIP)


def cvga_zone(min_bg: Any, max_bg: Any) -> np.ndarray:
    """The CVGA zone (``"A"``, ``"Lower B"``, ..., ``"E"``) of each (min, max) point; ``""`` for NaN.

    Columns: min > 90, 70 < min <= 90, min <= 70 mg/dL; rows: max < 180, 180 <= max < 300,
    max >= 300 (the boundaries of Magni et al. 2008, ties as simglucose's ``CVGA_analysis``).
    """
    lo, hi = np.broadcast_arrays(np.asarray(min_bg, dtype=np.float64), np.asarray(max_bg, dtype=np.float64))
    col = np.where(lo > 90.0, 0, np.where(lo > 70.0, 1, 2))
    row = np.where(hi < 180.0, 0, np.where(hi < 300.0, 1, 2))
    grid = np.array(_CVGA_GRID, dtype=object)
    zones = grid[row, col].astype(str)
    return np.where(np.isfinite(lo) & np.isfinite(hi), zones, "")


def cvga_counts(zones: Sequence[str] | np.ndarray) -> dict[str, int]:
    """Patients per CVGA letter ``A``..``E`` (the lower and upper halves of a letter together)."""
    letters = [str(z)[-1] for z in np.asarray(zones).ravel() if str(z)]
    return {letter: letters.count(letter) for letter in "ABCDE"}


def glucose_metrics(glucose: Any, minutes: Any) -> dict[str, np.ndarray]:
    """The per-patient metrics of :data:`METRIC_UNITS` (and ``cvga_zone``) from ``(n, T)`` glucose.

    Percentages are of the readings that are not missing (NaN); SD is the sample SD (ddof 1);
    CV = 100 SD / mean; GMI = 3.31 + 0.02392 mean (%). Ranges as the consensus: in range is
    70-180 inclusive, below is ``< 70`` / ``< 54``, above is ``> 180`` / ``> 250``.

    Arguments:
        glucose: ``(n, T)`` mg/dL, one row per patient (a 1-D array is one patient).
        minutes: ``(T,)`` the minute of each reading, strictly increasing.

    Example:
        >>> glucose_metrics([[65.0, 120.0, 200.0, 260.0]], [0, 5, 10, 15])["tir_70_180_pct"]  # doctest: +SKIP
        array([25.])
    """
    g, t = _checked(glucose, minutes)
    valid = np.isfinite(g)
    with np.errstate(invalid="ignore"):
        out = {
            "tir_70_180_pct": _percent((g >= 70.0) & (g <= 180.0), valid),
            "tbr_70_pct": _percent(g < 70.0, valid),
            "tbr_54_pct": _percent(g < 54.0, valid),
            "tar_180_pct": _percent(g > 180.0, valid),
            "tar_250_pct": _percent(g > 250.0, valid),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all readings missing, or only one
        mean = np.nanmean(g, axis=1)
        sd = np.nanstd(g, axis=1, ddof=1)
    out |= {"mean_mg_dl": mean, "sd_mg_dl": sd, "cv_pct": 100.0 * sd / mean, "gmi_pct": 3.31 + 0.02392 * mean}
    out["lbgi"], out["hbgi"] = risk_indices(g)
    for threshold in (70, 54):
        count, duration = hypo_events(g, t, float(threshold))
        out[f"hypo_events_{threshold}"] = count.astype(np.float64)
        out[f"hypo_event_min_{threshold}"] = duration
    out["cvga_min_mg_dl"], out["cvga_max_mg_dl"] = cvga_points(g)
    out["cvga_zone"] = cvga_zone(out["cvga_min_mg_dl"], out["cvga_max_mg_dl"])
    return out


def mean_ci(
    values: Any, *, level: float = 0.95, method: str = "t", n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """The mean over patients with its confidence interval; NaN values (failed patients) are left out.

    ``method="t"``: Student's t interval ``mean ± t_{n-1} sd / sqrt(n)``; ``"bootstrap"``: the
    percentile interval of ``n_boot`` resampled means (seeded). Fewer than 2 values: NaN bounds.
    """
    from scipy import stats

    if method not in ("t", "bootstrap"):
        raise InputError(f"method must be 't' or 'bootstrap'; got {method!r}.")
    if not 0.0 < level < 1.0:
        raise InputError(f"level must lie in (0, 1), e.g. 0.95; got {level}.")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    row = {"n": n, "mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n == 0:
        return row
    row["mean"] = float(x.mean())
    if n < 2:
        return row
    row["sd"] = float(x.std(ddof=1))
    if method == "t":
        half = float(stats.t.ppf(0.5 + level / 2.0, n - 1)) * row["sd"] / math.sqrt(n)
        row["ci_low"], row["ci_high"] = row["mean"] - half, row["mean"] + half
    else:
        draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        means = x[draws].mean(axis=1)
        row["ci_low"], row["ci_high"] = (float(v) for v in np.quantile(means, [0.5 - level / 2, 0.5 + level / 2]))
    return row


def summarize(
    metrics: Mapping[str, Any],
    groups: Sequence[str] | None = None,
    *,
    level: float = 0.95,
    method: str = "t",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (group, metric): n, mean, sd, CI of the mean, median, quartiles.

    ``groups`` labels each patient (e.g. child/adolescent/adult); the rows of group ``"all"``
    pool every patient. Non-numeric entries (``cvga_zone``) are skipped; ``seed`` seeds the
    bootstrap resamples.
    """
    numeric = {k: np.asarray(v, dtype=np.float64) for k, v in metrics.items() if _numeric(v)}
    n = len(next(iter(numeric.values()))) if numeric else 0
    labels = np.asarray(["all"] * n if groups is None else [str(g) for g in groups], dtype=object)
    if labels.size != n:
        raise InputError(f"groups has {labels.size} labels for {n} patients; give one label per patient.")
    names = ["all", *sorted(set(labels) - {"all"})] if groups is not None else ["all"]
    rows = []
    for group in names:
        keep = np.ones(n, dtype=bool) if group == "all" else labels == group
        for name, values in numeric.items():
            x = values[keep]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                q25, q50, q75 = (float(v) for v in np.nanpercentile(x, [25, 50, 75])) if x.size else (math.nan,) * 3
            row = mean_ci(x, level=level, method=method, seed=seed)
            rows.append({"group": group, "metric": name, **row, "median": q50, "q25": q25, "q75": q75,
                         "ci_level": level, "ci_method": method})  # fmt: skip
    return rows


def _numeric(values: Any) -> bool:
    return np.asarray(values).dtype.kind in "fiub"


def paired(first: Mapping[str, Any], second: Mapping[str, Any], *, level: float = 0.95) -> list[dict[str, Any]]:
    """Paired differences ``second - first`` per metric over the same patients, in the same order.

    Each row: n (patients with both values), the two means, the mean difference with its t
    interval, the paired t-test p-value and the Wilcoxon signed-rank p-value (scipy; zero
    differences dropped, 1.0 when every difference is zero).
    """
    from scipy import stats

    rows = []
    for name in first:
        if name not in second or not (_numeric(first[name]) and _numeric(second[name])):
            continue
        a, b = np.asarray(first[name], dtype=np.float64), np.asarray(second[name], dtype=np.float64)
        if a.shape != b.shape:
            raise InputError(f"metric {name!r} has {a.size} patients in one arm and {b.size} in the other; "
                             "compare controllers run on the same patients.")  # fmt: skip
        both = np.isfinite(a) & np.isfinite(b)
        d = b[both] - a[both]
        ci = mean_ci(d, level=level)
        p_t = p_w = math.nan
        if d.size >= 2 and np.all(d == 0):
            p_t = p_w = 1.0
        elif d.size >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                p_t = float(stats.ttest_rel(b[both], a[both]).pvalue)
                p_w = float(stats.wilcoxon(d).pvalue)
        rows.append({"metric": name, "n": ci["n"], "mean_first": float(a[both].mean()) if d.size else math.nan,
                     "mean_second": float(b[both].mean()) if d.size else math.nan, "mean_difference": ci["mean"],
                     "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "ci_level": level, "p_paired_t": p_t,
                     "p_wilcoxon": p_w})  # fmt: skip
    return rows
