"""Reading the observed series a closure is trained on: a CSV with the columns
``subject_id``, ``time`` (model units) and ``value`` (the observable's unit).

:func:`read_series` refuses, naming the file, the rows and the fix: a missing,
oversized, non-UTF-8, empty or unparseable file, missing columns, times or values
that are not finite numbers, negative times or values, and two different values for
one subject at one time. Nothing is averaged or dropped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twinloop.errors import InputError

MAX_BYTES = 256 << 20
COLUMNS = ("subject_id", "time", "value")
FIELD = "closure spec.data"


def read_series(path: Path, observable: str, inputs: Any) -> tuple[Any, list[str]]:
    """The series in ``path`` as a :class:`~twinloop.learn.ude.SeriesSet` and the subjects, in order."""
    from twinloop.learn.ude import SeriesSet

    frame = _frame(path)
    time, value = (_numbers(path, frame, c) for c in ("time", "value"))
    subjects_col = frame["subject_id"].fillna("").astype(str).str.strip()
    if (subjects_col == "").any():
        raise InputError(f"{FIELD} '{path}' has rows without a subject_id ({_rows(subjects_col == '')}); fill them in.")
    tidy = frame.assign(subject_id=subjects_col, time=time, value=value)
    spread = tidy.groupby(["subject_id", "time"])["value"].agg(["min", "max"])
    clash = spread[spread["max"] > spread["min"]]
    if len(clash):
        subject, t = clash.index[0]
        raise InputError(
            f"{FIELD} '{path}' has {len(clash)} conflicting duplicates, e.g. subject {subject!r} at time {t:g} with "
            f"values {clash['min'].iloc[0]:g} and {clash['max'].iloc[0]:g}; keep one reading per subject and time."
        )
    times = sorted(tidy["time"].unique())
    subjects = sorted(tidy["subject_id"].unique())
    wide = tidy.pivot_table(index="subject_id", columns="time", values="value", aggfunc="first")
    wide = wide.reindex(index=subjects, columns=times)
    mask = wide.notna().to_numpy()
    import numpy as np

    return SeriesSet(observable, np.asarray(times, dtype=float), wide.fillna(1.0).to_numpy(), mask, inputs), subjects


def _frame(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{FIELD} '{path}' does not exist or is not a file; give the path of a CSV with "
                         "columns subject_id, time, value (relative to the spec's folder).")  # fmt: skip
    if path.stat().st_size > MAX_BYTES:
        raise InputError(f"{FIELD} '{path}' is larger than {MAX_BYTES >> 20} MiB; give a smaller CSV.")
    try:
        frame = pd.read_csv(path, dtype={"subject_id": str}, encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{FIELD} '{path}' is not UTF-8 text; save it as a UTF-8 CSV.") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{FIELD} '{path}' is empty; it needs a header subject_id,time,value and rows.") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise InputError(
            f"{FIELD} '{path}' is not a readable CSV ({str(err).splitlines()[0][:120]}); fix the file."
        ) from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        shown = ", ".join(str(c)[:40] for c in list(frame.columns)[:8])
        raise InputError(
            f"{FIELD} '{path}' lacks the columns {missing}; it has {shown}. Expected subject_id, time, value."
        )
    if frame.empty:
        raise InputError(f"{FIELD} '{path}' has a header but no rows; add the observed series.")
    return frame


def _numbers(path: Path, frame: Any, column: str) -> Any:
    """The column as finite floats >= 0; otherwise an error naming the first bad rows."""
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float))
    if bad.any():
        raise InputError(f"{FIELD} '{path}': column '{column}' holds values that are not finite numbers "
                         f"({_rows(bad)}); fix or remove those rows.")  # fmt: skip
    if (values < 0).any():
        raise InputError(f"{FIELD} '{path}': column '{column}' holds negative values ({_rows(values < 0)}); "
                         f"{column}s of an observed series are >= 0. Fix those rows.")  # fmt: skip
    return values.astype(float)


def _rows(mask: Any) -> str:
    """``rows 2, 5, 9`` (1-based data rows after the header), at most five shown."""
    import numpy as np

    rows = (np.flatnonzero(np.asarray(mask)) + 1).tolist()
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows[:5]))}{more}"
