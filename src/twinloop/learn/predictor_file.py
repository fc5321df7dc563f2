"""Saving a trained :class:`~twinloop.learn.predictor.Predictor` and loading it back
without trusting the file.

``save_predictor`` pickles it to ``predictor.pkl`` and returns the file's SHA-256,
which the caller writes into the artifact's ``manifest.json``. ``load_predictor``
refuses the folder unless that manifest lists the hash and the file matches it
(checked before a single byte is unpickled), and it unpickles with an allowlist:
only the classes a predictor is made of (numpy arrays and generators, the
scikit-learn gradient-boosting pieces, the ``Predictor`` itself) can be named by
the file, so a crafted file cannot call ``os.system`` or any other function.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

from twinloop.errors import InputError

FILE = "predictor.pkl"
_NUMPY = [
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    *((f"numpy.{core}.multiarray", n) for core in ("core", "_core") for n in ("scalar", "_reconstruct")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
]
_SKLEARN = [
    ("sklearn._loss._loss", "CyHalfBinomialLoss"),
    ("sklearn._loss.link", "Interval"),
    ("sklearn._loss.link", "LogitLink"),
    ("sklearn._loss.loss", "HalfBinomialLoss"),
    ("sklearn.ensemble._hist_gradient_boosting.binning", "_BinMapper"),
    ("sklearn.ensemble._hist_gradient_boosting.gradient_boosting", "HistGradientBoostingClassifier"),
    ("sklearn.ensemble._hist_gradient_boosting.predictor", "TreePredictor"),
    ("sklearn.preprocessing._label", "LabelEncoder"),
]
ALLOWED = frozenset([*_NUMPY, *_SKLEARN, ("twinloop.learn.predictor", "Predictor")])


def save_predictor(predictor: Any, folder: Path) -> str:
    """Write ``folder/predictor.pkl`` atomically; return its SHA-256 for the manifest."""
    from twinloop.simulate.trajectories import write_atomic

    blob = pickle.dumps(predictor, protocol=5)
    write_atomic(folder / FILE, lambda tmp: Path(tmp).write_bytes(blob))
    return hashlib.sha256(blob).hexdigest()


def load_predictor(folder: Path) -> Any:
    """The predictor saved in ``folder`` by ``twinloop learn predictor``, verified first."""
    manifest = _manifest(folder)
    expected = (manifest.get("sha256") or {}).get(FILE)
    path = folder / FILE
    if not isinstance(expected, str) or not path.is_file():
        raise InputError(
            f"--predictor '{folder}' has no {FILE} listed with its SHA-256 in manifest.json; twinloop loads only "
            "predictors it wrote and can verify. Retrain it with `twinloop learn predictor`."
        )
    blob = path.read_bytes()
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise InputError(
            f"--predictor '{folder}': {FILE} has SHA-256 {actual[:16]}..., but its manifest.json lists "
            f"{expected[:16]}...; the file was changed after twinloop wrote it. Retrain it with "
            "`twinloop learn predictor`."
        )
    predictor = _Unpickler(io.BytesIO(blob), str(path)).load()
    return _checked(predictor, path)


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        raise InputError(
            f"--predictor '{folder}' has no readable manifest.json; give the folder written by "
            "`twinloop learn predictor`."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "predictor":
        raise InputError(
            f"--predictor '{folder}': its manifest.json is not of kind 'predictor'; give a predictor folder."
        )
    return manifest


class _Unpickler(pickle.Unpickler):
    """Resolves only the names in :data:`ALLOWED`."""

    def __init__(self, file: io.BytesIO, where: str) -> None:
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise InputError(
                f"'{self.where}' refers to {module}.{name}, which a twinloop predictor never holds; it is not "
                "loaded. Retrain the predictor with `twinloop learn predictor`."
            )
        return super().find_class(module, name)


def _checked(predictor: Any, path: Path) -> Any:
    """The loaded object, if it is a predictor whose trees index only their own nodes."""
    import numpy as np

    from twinloop.learn.predictor import Predictor

    if not isinstance(predictor, Predictor):
        raise InputError(f"'{path}' holds a {type(predictor).__name__}, not a twinloop Predictor.")
    n_features = len(predictor.features)
    for trees in getattr(predictor.model_, "_predictors", []):
        for tree in trees:
            nodes = tree.nodes
            links = np.concatenate([nodes["left"], nodes["right"]]).astype(np.int64)
            outside = links.min(initial=0) < 0 or links.max(initial=0) >= len(nodes)
            if outside or nodes["feature_idx"].max(initial=0) >= n_features:
                raise InputError(f"'{path}' holds a malformed tree (node indices out of range); it is not used.")
    return predictor
