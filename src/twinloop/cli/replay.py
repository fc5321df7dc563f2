"""Reading a recorded per-minute inputs table for ``twinloop simulate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from twinloop.errors import InputError
from twinloop.products.limits import size_text

COLUMNS = ("minute", "insulin_U_per_min", "carbs_g")
MAX_MINUTES = 366 * 1440


def read_recorded_inputs(path: Path) -> pd.DataFrame:
    """Read and validate ``minute,insulin_U_per_min,carbs_g``.

    Raises:
        InputError: naming the file, the column or row, and how to fix it.
    """
    if not path.is_file():
        raise InputError(f"Inputs file {path} does not exist.")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"Inputs file {path} is empty; expected the columns {','.join(COLUMNS)}.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"Inputs file {path} is not a readable CSV file: {exc}.") from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"Inputs file {path} lacks the column(s) {', '.join(missing)}; "
            f"expected {','.join(COLUMNS)}, got {','.join(map(str, table.columns))}."
        )
    if len(table) < 2:
        raise InputError(f"Inputs file {path} needs at least two rows (a start and an end minute); got {len(table)}.")
    for column in COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise InputError(f"Column {column} row {row + 1}: {table[column].iloc[row]!r} is not a number.")
        table[column] = values
    _check_rows(path, table)
    return table


def _check_rows(path: Path, table: pd.DataFrame) -> None:
    minutes = table["minute"].to_numpy()
    if not np.isfinite(minutes).all():
        row = int(np.argmax(~np.isfinite(minutes))) + 1
        raise InputError(
            f"Inputs file {path}: column minute row {row} is {minutes[row - 1]}; every row needs a finite minute."
        )
    if minutes[0] < 0:
        raise InputError(f"Inputs file {path}: minutes must be >= 0; the first is {minutes[0]}.")
    steps = np.diff(minutes)
    if np.any(steps <= 0):
        row = int(np.argmax(steps <= 0)) + 2
        raise InputError(
            f"Inputs file {path}: minutes must be strictly increasing; row {row} has minute "
            f"{minutes[row - 1]} after {minutes[row - 2]}."
        )
    span = float(minutes[-1] - minutes[0])
    if span > MAX_MINUTES:
        raise InputError(
            f"Inputs file {path}: column minute spans {span:g} minutes (rows 1 to {len(minutes)}); the largest "
            f"accepted span is {MAX_MINUTES} minutes (366 days): one output row per minute for the 30 virtual "
            f"patients would need {size_text(span * 30 * 3 * 8)} (rows x patients x 3 observables x 8 bytes). "
            "Split the record."
        )
    for column in ("insulin_U_per_min", "carbs_g"):
        values = table[column].to_numpy()
        if np.isnan(values[:-1]).any():
            row = int(np.argmax(np.isnan(values[:-1]))) + 1
            raise InputError(f"Column {column} row {row} is empty; only the last row may leave it empty.")
        if np.any(np.nan_to_num(values) < 0):
            row = int(np.argmax(np.nan_to_num(values) < 0)) + 1
            raise InputError(f"Column {column} row {row} is {values[row - 1]}; it must be >= 0.")
        if np.isinf(values).any():
            row = int(np.argmax(np.isinf(values))) + 1
            raise InputError(f"Column {column} row {row} is {values[row - 1]}; give finite numbers.")
