"""A patient's records read for a twin: one subject, the model's observables, every
reading inside its instrument's measurable range, and a note of what was merged or
ignored (counted by reason)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinloop.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


def patient_records(
    path: Path, model: Any, *, columns: Path | None = None, subject: str | None = None, config: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The patient's observations of ``model``'s observables and doses in ``--data``, and a
    note of what was merged or ignored (by reason); readings outside an instrument's range
    are refused with their rows."""
    from collections import Counter

    from twinloop.connect import ingest

    data = ingest(path, columns=columns, subject_id=subject)
    obs, doses = data.observations, data.doses
    ignored: Counter[str] = Counter(data.ignored)
    subjects = sorted(set(obs["subject_id"]) | set(doses["subject_id"]))
    if obs.empty and doses.empty:
        raise InputError(
            f"--data {path} holds no observations or doses{ignored_note(ignored)}; give a file with data rows."
        )
    if subject is not None:
        if subject not in subjects:
            raise InputError(
                f"--data {path} holds no data of patient {subject!r} (it holds {subjects[:5]})"
                f"{ignored_note(ignored)}; give this patient's data."
            )
        ignored["observations of other patients"] += int((obs["subject_id"] != subject).sum())
        ignored["doses of other patients"] += int((doses["subject_id"] != subject).sum())
        obs, doses = obs[obs["subject_id"] == subject], doses[doses["subject_id"] == subject]
    elif len(subjects) > 1:
        raise InputError(f"--data {path} holds {len(subjects)} patients; choose one with --subject ({subjects[:5]}).")
    units = {o.name: o.unit for o in model.observables}
    for variable, n in obs.loc[~obs["variable"].isin(units), "variable"].value_counts().items():
        ignored[f"observations of {variable} (not an observable of {model.id})"] += int(n)
    obs = obs[obs["variable"].isin(units)]
    check_ranges(obs, units, path, model, config)
    notes = [f"merged {data.duplicates} identical duplicate rows"] if data.duplicates else []
    notes += [f"ignored {n} {reason}" for reason, n in sorted(ignored.items()) if n]
    return obs.reset_index(drop=True), doses.reset_index(drop=True), "; ".join(notes)


def ignored_note(ignored: Any) -> str:
    return (
        f" (ignored: {', '.join(f'{n} {r}' for r, n in sorted(ignored.items()) if n)})" if any(ignored.values()) else ""
    )


def check_ranges(obs: pd.DataFrame, units: dict[str, str], path: Path, model: Any, config: Any = None) -> None:
    """Refuse readings outside the range the instrument of an observable can read
    (the CGM's 40-400 mg/dL); readings at a limit are kept (they are fitted as censored)."""
    import numpy as np

    from twinloop.connect.units import conversion
    from twinloop.errors import DataError
    from twinloop.twin.config import TwinConfig

    config = config or TwinConfig()
    for variable, rows in obs.groupby("variable"):
        low, high = config.noise_model(str(variable), model).range
        if not (np.isfinite(low) or np.isfinite(high)):
            continue
        target = units[str(variable)]
        scales = [conversion(str(u), target, str(variable)) for u in rows["unit"]]
        values = rows["value"].to_numpy(dtype=float) * [a for a, _ in scales] + [b for _, b in scales]
        bad = rows[(values < low - 1e-9) | (values > high + 1e-9)]
        if len(bad):
            shown = ", ".join(f"{r.source} {r.value:g} {r.unit}" for r in bad.head(3).itertuples())
            raise DataError(
                f"--data {path}: {len(bad)} reading(s) of {variable} outside the instrument's range {low:g}-{high:g} "
                f"{target} ({shown}{', ...' if len(bad) > 3 else ''}). Fix or remove those rows, or declare the "
                f"sensor's range when the twin is created (twin create --range {variable}=LOW:HIGH); a reading at a "
                "limit is taken as censored there."
            )
