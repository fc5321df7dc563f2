"""Saving a trained :class:`~twinloop.learn.predictor.Predictor` and loading it back
without trusting the file.

``save_predictor`` pickles it to ``predictor.pkl`` and returns the file's SHA-256,
which the caller writes into the artifact's ``manifest.json``. ``load_predictor``
refuses the folder unless that manifest lists the hash and the file matches it.
The hash sits in the same folder as the file, so it detects accidental change
(a truncated copy, a file swapped by mistake), not a deliberate one: whoever can
write the file can write the manifest. The real barrier is what follows:

- the file is unpickled with an allowlist: only the classes a predictor is made
  of (numpy arrays and generators, the scikit-learn gradient-boosting pieces, the
  ``Predictor`` itself) can be named by the file, so it cannot call ``os.system``
  or any other function; and it may not set attributes on those classes or
  functions themselves (a pickle ``BUILD`` whose target is one of them), only on
  the objects it makes;
- the loaded object must be a ``Predictor`` over a histogram gradient-boosting
  classifier whose trees are well formed: sklearn's node record layout, every
  split on a feature the model has, child indices inside the tree, every node
  reached once from the root (no cycle, which would make sklearn's prediction
  loop forever), categorical splits only on categorical features and with their
  bitsets in range.

Anything else is an :class:`~twinloop.errors.InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
from pathlib import Path
from typing import Any, ClassVar

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
    from twinloop._atomic import write_atomic

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
    return _checked(_unpickled(blob, path), path)


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


# what bytes that are not a predictor's pickle can raise while being unpickled
_UNREADABLE = (
    pickle.UnpicklingError, EOFError, AttributeError, ImportError, LookupError, TypeError, ValueError,
    ArithmeticError, MemoryError, RecursionError, struct.error, BufferError,
)  # fmt: skip


def _unpickled(blob: bytes, path: Path) -> Any:
    """``blob`` unpickled by :class:`_Unpickler`; any failure is an InputError naming ``path``."""
    try:
        return _Unpickler(io.BytesIO(blob), str(path)).load()
    except InputError:
        raise
    except _UNREADABLE as err:
        raise InputError(
            f"'{path}' is not a readable twinloop predictor ({type(err).__name__}: {str(err)[:200]}); it is not "
            "loaded. Retrain the predictor with `twinloop learn predictor`."
        ) from None


_PurePythonUnpickler: Any = pickle._Unpickler


class _Unpickler(_PurePythonUnpickler):
    """Resolves only the names in :data:`ALLOWED`, and never sets attributes on what they name.

    The pure-Python unpickler (``pickle._Unpickler``), because its opcode table can be
    changed: ``BUILD`` on a class or function from :data:`ALLOWED` (``(None, {...})``
    state sets attributes on it, process-wide) is refused before anything is set.
    """

    def __init__(self, file: io.BytesIO, where: str) -> None:
        super().__init__(file)
        self.where = where
        self.named: list[Any] = []  # what find_class handed out (kept alive, so ids stay unique)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise InputError(
                f"'{self.where}' refers to {module}.{name}, which a twinloop predictor never holds; it is not "
                "loaded. Retrain the predictor with `twinloop learn predictor`."
            )
        found = super().find_class(module, name)
        self.named.append(found)
        return found

    def load_build(self) -> None:
        target = self.stack[-2]  # the state is on top, what it is applied to below it
        if isinstance(target, type) or any(target is named for named in self.named):
            raise InputError(
                f"'{self.where}' sets attributes on {getattr(target, '__qualname__', type(target).__name__)} itself, "
                "which a twinloop predictor never does; it is not loaded."
            )
        super().load_build()

    dispatch: ClassVar[dict[int, Any]] = dict(_PurePythonUnpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


def _malformed(path: Path, problem: str) -> InputError:
    return InputError(f"'{path}' holds a malformed predictor ({problem}); it is not used.")


def _checked(predictor: Any, path: Path) -> Any:
    """The loaded object, if it is a predictor whose trees are well formed (see the module docstring)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from twinloop.learn.predictor import Predictor

    if type(predictor) is not Predictor:
        raise InputError(f"'{path}' holds a {type(predictor).__name__}, not a twinloop Predictor.")
    model = predictor.model_
    if type(model) is not HistGradientBoostingClassifier:
        raise _malformed(path, f"its model is a {type(model).__name__}, not a HistGradientBoostingClassifier")
    features = predictor.features
    if not isinstance(features, list | tuple) or not all(isinstance(f, str) for f in features):
        raise _malformed(path, "its feature names are not a list of names")
    n_features = len(features)
    if getattr(model, "n_features_in_", None) != n_features:
        raise _malformed(path, f"its model expects {getattr(model, 'n_features_in_', None)} features, not {n_features}")
    categorical = _categorical_features(model, n_features, path)
    trees = getattr(model, "_predictors", None)
    if not isinstance(trees, list) or not all(isinstance(t, list) for t in trees):
        raise _malformed(path, "its trees are not lists of tree predictors")
    for iteration in trees:
        for tree in iteration:
            _check_tree(tree, n_features, categorical, path)
    return predictor


def _categorical_features(model: Any, n_features: int, path: Path) -> Any:
    """The model's categorical-feature mask (all False when it has none), checked as sklearn reads it."""
    import numpy as np

    mapper = getattr(model, "_bin_mapper", None)
    mask = getattr(mapper, "is_categorical_", None)
    if mask is None:
        return np.zeros(n_features, dtype=bool)
    if not isinstance(mask, np.ndarray) or mask.shape != (n_features,) or mask.dtype.kind not in "bu":
        raise _malformed(path, "its bin mapper's categorical mask does not match its features")
    thresholds = getattr(mapper, "bin_thresholds_", None)
    for f in np.flatnonzero(mask):  # sklearn sets bit value of each known category of these: 0..255 only
        known = np.asarray(thresholds[f]) if isinstance(thresholds, list) and f < len(thresholds) else None
        if known is None or known.ndim != 1 or (known.size and (known.min() < 0 or known.max() > 255)):
            raise _malformed(path, f"the known categories of feature {f} are not values 0..255")
    return mask.astype(bool)


def _check_tree(tree: Any, n_features: int, categorical: Any, path: Path) -> None:
    """One TreePredictor: sklearn's record layout, splits on real features, reached once each from the root."""
    import numpy as np
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    if type(tree) is not TreePredictor:
        raise _malformed(path, f"a tree is a {type(tree).__name__}")
    nodes = tree.nodes
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 or not nodes.size:
        raise _malformed(path, "a tree's nodes are not sklearn's node records")
    bitsets = [tree.binned_left_cat_bitsets, tree.raw_left_cat_bitsets]
    if not all(isinstance(b, np.ndarray) and b.dtype == np.uint32 and b.ndim == 2 and b.shape[1] == 8 for b in bitsets):
        raise _malformed(path, "a tree's category bitsets are not uint32 arrays of 8 columns")
    if bitsets[0].shape != bitsets[1].shape:
        raise _malformed(path, "a tree's binned and raw category bitsets differ in length")
    splits = nodes["is_leaf"] == 0
    feature = nodes["feature_idx"][splits]
    if feature.size and (feature.min() < 0 or feature.max() >= n_features):
        raise _malformed(path, f"a split is on a feature outside 0..{n_features - 1}")
    is_cat = splits & (nodes["is_categorical"] != 0)
    if is_cat.any() and (
        nodes["bitset_idx"][is_cat].max() >= len(bitsets[0]) or not categorical[nodes["feature_idx"][is_cat]].all()
    ):
        raise _malformed(path, "a categorical split has no bitset or is on a feature that is not categorical")
    left, right = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64)
    seen = np.zeros(len(nodes), dtype=bool)
    stack = [0]
    while stack:  # every node reached once: a node reached twice is a shared subtree or a cycle
        i = stack.pop()
        if not 0 <= i < len(nodes) or seen[i]:
            raise _malformed(path, "a tree's node links leave the tree or loop back")
        seen[i] = True
        if splits[i]:
            stack.extend((int(left[i]), int(right[i])))
