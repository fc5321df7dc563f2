"""The canonical observation and dose tables: column names, dtypes and empty tables.

A leaf module like ``_config``, defined once for every package that reads or writes
patient data (``connect`` validates against it, ``products`` writes it, ``calibrate``
and ``twin`` read it). Observations, long format, one row per measurement::

    subject_id, time, variable, value, unit, code, source

Doses, one row per administration or rate segment::

    subject_id, time, input, kind, amount, duration, unit

``kind`` is ``"bolus"`` (an amount, given over ``duration`` minutes, 0 for
instantaneous) or ``"rate"`` (an amount per minute held for ``duration`` minutes).
``time`` is an absolute UTC timestamp in patient records (``time="utc"``) and a
number in model time while a synthetic product is assembled (``time="model"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

OBSERVATION_COLUMNS = ("subject_id", "time", "variable", "value", "unit", "code", "source")
DOSE_COLUMNS = ("subject_id", "time", "input", "kind", "amount", "duration", "unit")
DOSE_KINDS = ("bolus", "rate")
# columns holding numbers (float64); the rest hold text (object), ``time`` is set by its kind
NUMBER_COLUMNS = frozenset({"value", "amount", "duration"})
TimeKind = Literal["utc", "model"]


def dtypes(columns: tuple[str, ...], time: TimeKind = "utc") -> dict[str, Any]:
    """The pandas dtype of each column: float64 numbers; ``time`` as UTC timestamps
    (``"utc"``, patient records) or float64 model time (``"model"``, synthetic products);
    text as ``object`` in records (validation works on Python strings) and as pandas'
    string dtype in products (so an empty table is still written with text columns)."""
    if time not in ("utc", "model"):
        raise ValueError(f"time must be 'utc' or 'model'; got {time!r}.")
    stamp, text = ("datetime64[ns, UTC]", object) if time == "utc" else ("float64", str)
    return {c: stamp if c == "time" else "float64" if c in NUMBER_COLUMNS else text for c in columns}


def _empty(columns: tuple[str, ...], time: TimeKind) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in dtypes(columns, time).items()})


def empty_observations(time: TimeKind = "utc") -> pd.DataFrame:
    """An observation table with the canonical columns and dtypes and no rows."""
    return _empty(OBSERVATION_COLUMNS, time)


def empty_doses(time: TimeKind = "utc") -> pd.DataFrame:
    """A dose table with the canonical columns and dtypes and no rows."""
    return _empty(DOSE_COLUMNS, time)
