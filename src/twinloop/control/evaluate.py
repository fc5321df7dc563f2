"""Artificial-pancreas evaluation: several controllers on the same patients, scenario and seed,
with the consensus metrics per patient, summaries with confidence intervals over patients (all
and by group), paired comparisons, CVGA, and an artifact on disk (Parquet, manifest, report).

Every metric is computed twice, and its column says on what: ``cgm_*`` on the sensor's
readings at its sample times (what a clinical CGM report sees), ``bg_*`` on plasma glucose
every minute (the patient's true state). Patients whose integration failed are left out of
the metrics (NaN) and counted in the lineage.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinloop.control import metrics as m
from twinloop.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from twinloop.control.patients import Patients
    from twinloop.control.result import ClosedLoopResult
    from twinloop.control.scenario import Scenario
    from twinloop.control.types import Controller
    from twinloop.models.base import Model

KIND = "twinloop.control-evaluation"
SIGNALS = {
    "cgm": "CGM readings at the sensor's sample times",
    "bg": "plasma glucose every minute",
}


def signal_metrics(result: ClosedLoopResult) -> dict[str, np.ndarray]:
    """The per-patient metrics of one run, ``cgm_*`` and ``bg_*`` (failed patients NaN)."""
    sample = np.searchsorted(result.minutes, result.sensor_times())
    signals = {"cgm": (result.cgm[:, sample], result.minutes[sample]), "bg": (result.bg, result.minutes)}
    failed = np.asarray(result.failed, dtype=bool)
    out: dict[str, np.ndarray] = {}
    for prefix, (glucose, minutes) in signals.items():
        glucose = np.where(failed[:, None], np.nan, glucose)
        out |= {f"{prefix}_{k}": v for k, v in m.glucose_metrics(glucose, minutes).items()}
    return out


@dataclass(frozen=True)
class Evaluation:
    """The outcome of :func:`evaluate`: the runs and their tables.

    Attributes:
        results: one closed-loop result per controller, in the order given.
        per_patient: one row per controller and patient: ``controller, patient, group, failed``
            and the metrics (``cgm_*``, ``bg_*``).
        summary: one row per controller, group (``all`` and each group) and metric: n, mean,
            sd, CI of the mean (``ci_low``, ``ci_high``), median, quartiles.
        comparisons: one row per pair of controllers, group and metric: the paired difference
            ``second - first``, its CI, paired t and Wilcoxon p-values.
        cvga: patients per CVGA zone letter, per controller and signal.
    """

    results: tuple[ClosedLoopResult, ...]
    per_patient: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    cvga: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def controllers(self) -> list[str]:
        return [r.controller for r in self.results]

    def lineage(self) -> dict[str, Any]:
        """Model, patients, controllers and settings, scenario, seed, code version, CI method."""
        first = self.results[0].lineage()
        return {
            "model": first["model"],
            "patients": self.settings["patients"],
            "controllers": [{"name": r.controller, "settings": dict(r.controller_settings)} for r in self.results],
            "scenario": first["scenario"],
            "seed": first["seed"],
            "integration": first["integration"],
            "failed_patients": {r.controller: _failed(r) for r in self.results},
            "metrics": {"signals": SIGNALS, "confidence_interval": self.settings["ci"], "units": m.METRIC_UNITS},
            "twinloop_version": first["twinloop_version"],
        }

    def table(self, group: str = "all", signal: str = "cgm") -> pd.DataFrame:
        """Metric rows by controller columns, each cell ``mean [CI]``, for one group and signal."""
        import pandas as pd

        from twinloop.control.report import metric_table

        if signal not in SIGNALS:
            raise InputError(f"signal must be one of {sorted(SIGNALS)}; got {signal!r}.")
        rows = [r for r in _records(self.summary) if r["metric"].startswith(f"{signal}_")]
        frame = pd.DataFrame(metric_table(rows, group))
        if frame.empty:
            raise InputError(f"No group {group!r}; the groups are {sorted(set(self.summary['group']))}.")
        return frame.set_index("metric")[self.controllers]

    def traces(self) -> pd.DataFrame:
        """Every run's per-minute traces, one row per controller, patient and minute."""
        import pandas as pd

        return pd.concat([r.to_frame() for r in self.results], ignore_index=True)

    def report_html(self) -> str:
        """The HTML report (metric tables, paired comparisons, CVGA, percentile bands)."""
        from twinloop.control.report import render

        by = {c: self.per_patient[self.per_patient["controller"] == c] for c in self.controllers}
        cvga = {c: (list(f["patient"]), f["bg_cvga_min_mg_dl"].to_numpy(), f["bg_cvga_max_mg_dl"].to_numpy())
                for c, f in by.items()}  # fmt: skip
        bands = {r.controller: (r.minutes, np.where(r.failed[:, None], np.nan, r.bg)) for r in self.results}
        lineage = self.lineage()
        scenario = lineage["scenario"]
        title = (f"Artificial-pancreas evaluation: {', '.join(self.controllers)} on {len(self.results[0].ids)} "
                 f"patients, {scenario['days']:g} day(s)")  # fmt: skip
        return render(title=title, lineage=lineage, summary=_records(self.summary),
                      comparisons=_records(self.comparisons), cvga=cvga, bands=bands,
                      signal=SIGNALS["bg"])  # fmt: skip

    def write(self, out_dir: str | Path, *, traces: bool = True, overwrite: bool = False) -> Path:
        """Write the evaluation into ``out_dir``: ``patients``, ``summary``, ``comparisons``,
        ``cvga`` (and ``traces``, per minute) as Parquet, ``report.html``, ``manifest.json``
        (lineage, and the SHA-256 and row count of every file) and ``prov.json``.

        Raises:
            InputError: ``out_dir`` is a file, or holds an earlier evaluation and ``overwrite``
                is False.
        """
        from twinloop._paths import check_output

        out = Path(out_dir)
        check_output(out, "--out", "folder")
        if (out / "manifest.json").exists() and not overwrite:
            raise InputError(
                f"--out '{out}' already holds an artifact (manifest.json); choose another folder or overwrite it "
                "(--force, or overwrite=True)."
            )
        return _write(self, out, traces)


def _failed(result: ClosedLoopResult) -> list[str]:
    return [i for i, f in zip(result.ids, result.failed, strict=True) if f]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _write(evaluation: Evaluation, out: Path, traces: bool) -> Path:
    from twinloop._atomic import write_atomic
    from twinloop._provenance import Activity, Source, content_sha256, sha256_file

    lineage = evaluation.lineage()
    activity = Activity(
        "evaluate-controllers",
        settings={key: lineage[key] for key in ("controllers", "scenario", "integration", "metrics")},
        seeds={"seed": lineage["seed"]},
        used=[Source("model", "model", f"{lineage['model']['id']} {lineage['model']['version']}",
                     lineage["model"]["content_hash"]),
              Source.content("patients", "patients", f"{len(evaluation.results[0].ids)} patients", lineage["patients"]),
              Source.content("scenario", "scenario", "scenario", lineage["scenario"])],
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    tables = {"patients": evaluation.per_patient, "summary": evaluation.summary,
              "comparisons": evaluation.comparisons, "cvga": evaluation.cvga}  # fmt: skip
    if traces:
        tables["traces"] = evaluation.traces()
    files: dict[str, Any] = {}
    for name, frame in tables.items():
        target = out / f"{name}.parquet"
        write_atomic(target, lambda tmp, f=frame: f.to_parquet(tmp, index=False, compression="zstd"))
        files[target.name] = {"sha256": sha256_file(target), "rows": len(frame)}
    report = out / "report.html"
    write_atomic(report, lambda tmp: Path(tmp).write_text(evaluation.report_html(), encoding="utf-8"))
    files[report.name] = {"sha256": sha256_file(report), "rows": None}
    manifest = {"kind": KIND, "lineage": lineage, "lineage_sha256": content_sha256(lineage), "files": files}
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    write_atomic(out / "manifest.json", lambda tmp: Path(tmp).write_text(text))
    activity.record(out, "control-evaluation")
    return out


def _patients_lineage(patients: Patients) -> dict[str, Any]:
    from twinloop._provenance import content_sha256

    therapy = (patients.basal, patients.carb_ratio, patients.correction_factor)
    return {
        "n": patients.n,
        "ids": list(patients.ids),
        "groups": sorted(set(patients.groups)),
        "params_sha256": content_sha256(np.asarray(patients.params).round(15).tolist()),
        "therapy_sha256": content_sha256([np.asarray(a).round(15).tolist() for a in therapy]),
    }


def _check(controllers: Sequence[Controller]) -> None:
    from twinloop.control.types import Controller

    if isinstance(controllers, Controller) or not isinstance(controllers, Sequence) or not controllers:
        raise InputError("controllers must be a non-empty list of twinloop.control.Controller; got "
                         f"{type(controllers).__name__}. Pass e.g. [basal_bolus(), pid()].")  # fmt: skip
    names = [getattr(c, "name", None) for c in controllers]
    if len(set(names)) != len(names):
        raise InputError(
            f"Controller names must differ, they label the results; got {names}. Rename one, e.g. "
            "dataclasses.replace(pid(P=0.002), name='pid-P0.002')."
        )


def evaluate(
    model: Model,
    patients: Patients,
    controllers: Sequence[Controller],
    scenario: Scenario | None = None,
    *,
    seed: int = 0,
    accurate: bool = True,
    ci_method: str = "t",
    ci_level: float = 0.95,
) -> Evaluation:
    """Run each controller closed-loop on the same patients, scenario and seed, and evaluate.

    Arguments:
        controllers: the controllers to compare (distinct names); comparisons are paired
            over the patients, for every pair, as ``second - first`` in the order given.
        seed: meals, announcements and sensor errors: the same for every controller.
        accurate: adaptive integration each minute (False: one step per minute, faster).
        ci_method: ``"t"`` (Student's t interval of the mean over patients) or ``"bootstrap"``
            (percentile interval of 2000 resampled means, seeded by ``seed``).
        ci_level: the confidence level of every interval.

    Example:
        >>> ev = evaluate(model, Patients.published(model), [basal_bolus(), pid()], Scenario(days=1))  # doctest: +SKIP
        >>> ev.table("all", "bg")  # doctest: +SKIP
    """
    from twinloop.control.loop import closed_loop

    _check(controllers)
    m.mean_ci([1.0, 2.0], level=ci_level, method=ci_method)  # refuse a bad method or level before running
    results = tuple(closed_loop(model, patients, c, scenario, seed=seed, accurate=accurate) for c in controllers)
    ci: dict[str, Any] = {"method": ci_method, "level": ci_level, "over": "patients (failed patients left out)"}
    if ci_method == "bootstrap":
        ci |= {"resamples": 2000, "seed": seed}
    settings = {"patients": _patients_lineage(patients), "ci": ci}
    return tabulate(results, ci_method=ci_method, ci_level=ci_level, seed=seed, settings=settings)


def tabulate(
    results: Sequence[ClosedLoopResult],
    *,
    ci_method: str = "t",
    ci_level: float = 0.95,
    seed: int = 0,
    settings: dict[str, Any],
) -> Evaluation:
    """The tables of an evaluation from closed-loop results on the same patients."""
    import pandas as pd

    ids = results[0].ids
    if any(r.ids != ids for r in results):
        raise InputError("The results to compare must come from the same patients in the same order.")
    groups = list(results[0].groups)
    per: dict[str, dict[str, np.ndarray]] = {r.controller: signal_metrics(r) for r in results}
    frames, summary, cvga = [], [], []
    for r in results:
        frame = pd.DataFrame({"controller": r.controller, "patient": list(ids), "group": groups, "failed": r.failed})
        frames.append(pd.concat([frame, pd.DataFrame(per[r.controller])], axis=1))
        rows = m.summarize(per[r.controller], groups, level=ci_level, method=ci_method, seed=seed)
        summary += [{"controller": r.controller, **row} for row in rows]
        for prefix in SIGNALS:
            counts = m.cvga_counts(per[r.controller][f"{prefix}_cvga_zone"])
            cvga.append({"controller": r.controller, "signal": prefix, **counts})
    comparisons = []
    labels = np.asarray(groups, dtype=object)
    for a, b in itertools.combinations(results, 2):
        for group in ["all", *sorted(set(groups))]:
            keep = np.ones(len(ids), dtype=bool) if group == "all" else labels == group
            first = {k: v[keep] for k, v in per[a.controller].items()}
            second = {k: v[keep] for k, v in per[b.controller].items()}
            comparisons += [{"first": a.controller, "second": b.controller, "group": group, **row}
                            for row in m.paired(first, second, level=ci_level)]  # fmt: skip
    return Evaluation(tuple(results), pd.concat(frames, ignore_index=True), pd.DataFrame(summary),
                      pd.DataFrame(comparisons), pd.DataFrame(cvga), dict(settings))  # fmt: skip
