"""Run anonymeter's three attacks; executed by the privacy environment's python, not imported.

anonymeter pins numpy < 1.27 while twinloop needs numpy 2, so it lives in its own
environment (``envs/privacy``, built by ``make env`` into ``.venv-privacy``).
:func:`twinloop.govern.privacy.anonymeter_risks` writes the three tables as Parquet
and a job file, runs ``python anonymeter_worker.py JOB OUT`` there and reads the
JSON it writes. This file imports nothing from twinloop.

Job keys: ``original``, ``synthetic``, ``control`` (Parquet paths), ``n_attacks``,
``singling_out_columns`` (n_cols), ``linkability_aux`` (two lists of columns),
``inference`` (a list of ``{"secret": column, "regression": bool}``), ``seed``.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any


def _risk(evaluator: Any) -> dict[str, Any]:
    results = evaluator.results()
    risk = results.risk()
    return {
        "risk": float(risk.value),
        "ci95": [float(risk.ci[0]), float(risk.ci[1])],
        "attack_rate": float(results.attack_rate.value),
        "baseline_rate": float(results.baseline_rate.value),
        "control_rate": float(results.control_rate.value) if results.control_rate is not None else None,
        "n_attacks": int(results.n_attacks_ori if hasattr(results, "n_attacks_ori") else results.n_attacks),
    }


def main(job_path: str, out_path: str) -> None:
    import numpy as np
    import pandas as pd
    from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator

    with open(job_path) as f:
        job = json.load(f)
    ori = pd.read_parquet(job["original"])
    syn = pd.read_parquet(job["synthetic"])
    control = pd.read_parquet(job["control"])
    n_attacks = int(job["n_attacks"])
    np.random.seed(int(job["seed"]))
    out: dict[str, Any] = {"anonymeter": _version()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        singling = SinglingOutEvaluator(
            ori=ori, syn=syn, control=control, n_attacks=n_attacks,
            n_cols=int(job["singling_out_columns"]), max_attempts=int(job.get("max_attempts", 200_000)),
            seed=int(job["seed"]),
        )  # fmt: skip
        try:
            out["singling_out"] = _risk(singling.evaluate(mode="multivariate"))
        except RuntimeError as error:  # too few queries could be generated
            out["singling_out"] = {"error": str(error)}
        aux = tuple(job["linkability_aux"])
        linkability = LinkabilityEvaluator(ori=ori, syn=syn, control=control, n_attacks=n_attacks,
                                           aux_cols=(list(aux[0]), list(aux[1])), n_neighbors=1)  # fmt: skip
        out["linkability"] = _risk(linkability.evaluate(n_jobs=1))
        out["inference"] = {}
        for target in job["inference"]:
            secret = target["secret"]
            columns = [c for c in ori.columns if c != secret]
            inference = InferenceEvaluator(ori=ori, syn=syn, control=control, aux_cols=columns, secret=secret,
                                           regression=bool(target["regression"]), n_attacks=n_attacks)  # fmt: skip
            out["inference"][secret] = _risk(inference.evaluate(n_jobs=1))
    with open(out_path, "w") as f:
        json.dump(out, f, indent=2)


def _version() -> str:
    from importlib.metadata import version

    return version("anonymeter")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
