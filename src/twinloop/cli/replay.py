"""Reading a recorded per-minute inputs table for ``twinloop simulate``, and the model and
plan that replay it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from twinloop.errors import InputError
from twinloop.models.base import Model
from twinloop.models.inputs import Inputs
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


REPLAY_INPUTS = ("insulin", "carbs")


def _replays(model: Model) -> bool:
    rates = [i.name for i in model.rate_inputs]
    return model.time_unit == "min" and all(name in rates for name in REPLAY_INPUTS)


def replay_model(model_id: str | None) -> Model:
    """The model to replay a record through: ``model_id``, or the first registered model
    with per-minute ``insulin`` and ``carbs`` rate inputs. Refused if it has none."""
    from twinloop.models.registry import available, get

    if model_id is None:
        found = next((m for m in map(get, available()) if _replays(m)), None)
        if found is None:
            raise InputError(
                "No registered model takes per-minute insulin and carbs rate inputs; name one with --model."
            )
        return found
    model = get(model_id)
    if not _replays(model):
        raise InputError(
            f"Replaying recorded insulin and carbohydrate needs a model with per-minute rate inputs "
            f"{list(REPLAY_INPUTS)}; '{model_id}' is not one (inputs {[i.name for i in model.inputs]}, "
            f"time unit {model.time_unit})."
        )
    return model


def recorded_plan(table: pd.DataFrame, eat_rate_g_per_min: float = 5.0) -> Inputs:
    """The plan of a record, as simglucose delivers it: ``insulin_U_per_min`` of row i holds
    until row i+1; ``carbs_g`` of row i is announced at its minute, eaten at ``eat_rate_g_per_min``
    (the last row only closes the record)."""
    t = table["minute"].to_numpy(dtype=np.float64)
    insulin = np.nan_to_num(table["insulin_U_per_min"].to_numpy(dtype=np.float64))
    carbs = np.nan_to_num(table["carbs_g"].to_numpy(dtype=np.float64))
    plan = Inputs.series("insulin", t[:-1], insulin[:-1], end=float(t[-1]))
    meals = [(float(m), float(g)) for m, g in zip(t[:-1], carbs[:-1], strict=True) if g > 0]
    return plan + Inputs.meals(meals, rate_g_per_min=eat_rate_g_per_min)
