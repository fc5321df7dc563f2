"""Privacy of a synthetic dataset made from real records.

The real records are split in two halves of equal size: ``train`` (the data the
synthetic set was made from) and ``holdout`` (never shown to the generator).

* **Distance to closest record (DCR).** For each synthetic row, the nearest real
  row in standardized feature space. If the generator copied its training data, the
  nearest record is in ``train`` far more often than half the time, and many
  synthetic rows sit closer to a training row than holdout rows ever do.
* **anonymeter** (singling out, linkability, inference). Each attack's success on
  ``train`` is compared with its success on ``holdout``; the risk is the excess,
  with a 95 % interval. anonymeter needs numpy < 1.27, so it runs in the separate
  privacy environment (see :mod:`twinloop.govern.anonymeter_worker`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from twinloop.errors import InputError
from twinloop.govern.records import common_columns, is_numeric, numeric_matrix

WORKER = Path(__file__).with_name("anonymeter_worker.py")


def split_halves(real: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two disjoint halves of equal size (one row dropped if the count is odd)."""
    order = np.random.default_rng(seed).permutation(len(real))
    half = len(real) // 2
    return real.iloc[order[:half]], real.iloc[order[half : 2 * half]]


def dcr(train: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, Any]:
    """Distance-to-closest-record statistics of ``synthetic`` against equal-size ``train`` / ``holdout``."""
    if len(train) != len(holdout):
        raise InputError(f"DCR needs equal-size train and holdout sets; got {len(train)} and {len(holdout)}.")
    columns = common_columns(train, synthetic)
    reference = pd.concat([train, holdout])
    xt, xh, xs = (numeric_matrix(f[columns], columns, reference) for f in (train, holdout, synthetic))
    to_train = NearestNeighbors(n_neighbors=1).fit(xt).kneighbors(xs)[0][:, 0]
    to_holdout = NearestNeighbors(n_neighbors=1).fit(xh).kneighbors(xs)[0][:, 0]
    # how close real, unseen records come to the training set: the scale of "too close"
    holdout_to_train = NearestNeighbors(n_neighbors=1).fit(xt).kneighbors(xh)[0][:, 0]
    threshold = float(np.quantile(holdout_to_train, 0.05))
    closer_to_train = float(np.mean(to_train < to_holdout) + 0.5 * np.mean(to_train == to_holdout))
    return {
        "columns": columns,
        "share_closer_to_train": closer_to_train,
        "median_dcr_train": float(np.median(to_train)),
        "median_dcr_holdout": float(np.median(to_holdout)),
        "holdout_to_train_p05": threshold,
        "share_below_holdout_p05": float(np.mean(to_train < threshold)),
        "n_synthetic": len(synthetic),
        "n_train": len(train),
    }


def privacy_python() -> Path:
    """The privacy environment's interpreter: ``TWINLOOP_PRIVACY_PYTHON`` or ``.venv-privacy`` beside ``.venv``."""
    configured = os.environ.get("TWINLOOP_PRIVACY_PYTHON")
    candidates = [Path(configured)] if configured else []
    candidates += [
        Path(sys.prefix).parent / ".venv-privacy" / "bin" / "python",
        Path.cwd() / ".venv-privacy/bin/python",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(
        "anonymeter's environment was not found (looked for "
        + ", ".join(str(c) for c in candidates)
        + "); run `make env` in the twinloop checkout, or set TWINLOOP_PRIVACY_PYTHON to a python with anonymeter."
    )


def _plain(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Columns anonymeter can read: floats and strings, no index."""
    out = frame[list(columns)].reset_index(drop=True).copy()
    for c in out.columns:
        out[c] = out[c].astype(float) if is_numeric(out[c]) else out[c].astype(str)
    return out


def anonymeter_risks(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    *,
    quasi_identifiers: Sequence[str],
    secrets: Sequence[str],
    n_attacks: int = 300,
    singling_out_columns: int = 3,
    seed: int = 0,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """anonymeter's singling-out, linkability and inference risks (run in the privacy environment).

    Linkability splits the columns into the quasi-identifiers and the rest; each
    inference attack guesses one secret column from all the others.
    """
    columns = common_columns(train, synthetic)
    missing = [c for c in (*quasi_identifiers, *secrets) if c not in columns]
    if missing:
        raise InputError(f"Privacy columns {missing} are not in both datasets (they share {columns}).")
    rest = [c for c in columns if c not in quasi_identifiers]
    n = min(n_attacks, len(train), len(holdout))
    with tempfile.TemporaryDirectory(prefix="twinloop-anonymeter-") as tmp:
        folder = Path(tmp)
        for name, frame in (("original", train), ("control", holdout), ("synthetic", synthetic)):
            _plain(frame, columns).to_parquet(folder / f"{name}.parquet")
        job: dict[str, Any] = {name: str(folder / f"{name}.parquet") for name in ("original", "control", "synthetic")}
        job |= {"n_attacks": n, "singling_out_columns": singling_out_columns, "seed": seed,
                "linkability_aux": [list(quasi_identifiers), rest],
                "inference": [{"secret": s, "regression": is_numeric(train[s])} for s in secrets]}  # fmt: skip
        (folder / "job.json").write_text(json.dumps(job))
        command = [str(privacy_python()), "-P", str(WORKER), str(folder / "job.json"), str(folder / "out.json")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"anonymeter failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        return dict(json.loads((folder / "out.json").read_text()))


def privacy_report(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    *,
    quasi_identifiers: Sequence[str],
    secrets: Sequence[str],
    train: pd.DataFrame | None = None,
    holdout: pd.DataFrame | None = None,
    n_attacks: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """DCR and anonymeter risks; ``train``/``holdout`` default to two random halves of ``real``."""
    if train is None or holdout is None:
        train, holdout = split_halves(real, seed)
    risks = anonymeter_risks(train, holdout, synthetic, quasi_identifiers=quasi_identifiers, secrets=secrets,
                             n_attacks=n_attacks, seed=seed)  # fmt: skip
    inference = [v["risk"] for v in risks["inference"].values() if "risk" in v]
    headline = [risks["linkability"].get("risk", 0.0), risks["singling_out"].get("risk", 0.0), *inference]
    return {
        "dcr": dcr(train, holdout, synthetic),
        "anonymeter": risks,
        "max_risk": float(max(headline)),
        "quasi_identifiers": list(quasi_identifiers),
        "secrets": list(secrets),
    }


def leaky_copy(real: pd.DataFrame, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """A deliberately unsafe "synthetic" set: real rows resampled with ``noise`` × sd jitter.

    The reference point a privacy evaluation must flag."""
    rng = np.random.default_rng(seed)
    copy = real.iloc[rng.integers(0, len(real), len(real))].copy()
    for c in copy.columns:
        if is_numeric(copy[c]):
            copy[c] = copy[c] + noise * float(real[c].std()) * rng.standard_normal(len(copy))
    return copy
