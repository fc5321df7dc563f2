"""Lineage of a synthetic observation: from a row back to the virtual patient, its
parameter vector and covariates, the seeds that made it, the population and the
model version (by content hash)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from twinloop.errors import InputError
from twinloop.products.dataset import Product


def lineage(product_dir: str | Path, patient: str) -> dict[str, Any]:
    """Everything that produced the observations of ``patient`` in a product."""
    if not isinstance(patient, str) or not 1 <= len(patient) <= 128:
        raise InputError(f"--patient must be a subject id such as vp00042; got {patient!r}.")
    product = Product.open(product_dir)
    try:
        return _lineage(product, patient)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"Product '{product.path}' has damaged tables ({type(exc).__name__}: {exc}).") from None


def _lineage(product: Product, patient: str) -> dict[str, Any]:
    table = product.table("patients", filters=[("subject_id", "==", patient)])
    if table.empty:
        raise InputError(f"Patient '{patient}' is not in product '{product.manifest['name']}'.")
    row = table.iloc[0]
    spec = product.manifest["spec"]
    model_params = [c for c in table.columns if c in _parameter_names(product)]
    chunk = int(row["chunk"])
    seed = int(product.manifest["seeds"]["seed"])
    observations = product.table("observations", filters=[("subject_id", "==", patient)], columns=["variable"])
    return {
        "product": {"name": product.manifest["name"], "path": str(product.path)},
        "patient": patient,
        "arm": row["arm"],
        "group": row["group"],
        "covariates": {
            c: _plain(row[c])
            for c in table.columns
            if c not in (*model_params, "subject_id", "arm", "group", "chunk", "simulation_failed")
        },
        "parameters": {c: float(row[c]) for c in model_params},
        "simulation_failed": bool(row["simulation_failed"]),
        "seeds": {
            "product_seed": seed,
            "chunk": chunk,
            "population_seed": [seed, chunk],
            "population_seed_state": int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0]),
            "arm_seed": [seed, chunk, 1],
            "dropout_seed": [seed, chunk, 2],
            "observation_seeds": {o["name"]: [seed, chunk, 3, j] for j, o in enumerate(spec.get("observations", []))},
        },
        "model": product.manifest["model"],
        "population": product.manifest["population"],
        "code_version": product.manifest["code_version"],
        "observation_rows": observations["variable"].value_counts().to_dict(),
        "files": {k: v["sha256"] for k, v in product.manifest["files"].items()},
    }


def _parameter_names(product: Product) -> set[str]:
    from twinloop.models.registry import get

    return set(get(product.manifest["model"]["id"]).parameter_names)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
