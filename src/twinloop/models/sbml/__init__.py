"""SBML import: :func:`load_sbml` reads an SBML file into a twinloop :class:`Model`.

``document`` reads and checks the file with python-libsbml (refusing what twinloop does
not support), ``mathml`` turns MathML into closures over ``jax.numpy``, ``units`` maps
SBML units to UCUM, ``symbols`` and ``assemble`` build the model, ``events`` finds the
firing times of time-triggered events.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twinloop.models.base import Model


def load_sbml(path: str | Path, *, model_id: str | None = None) -> Model:
    """Read an SBML file into a twinloop model.

    Arguments:
        path: the SBML (.xml) file.
        model_id: the registry id of the model; default: the SBML model id in
            lower case with ``_`` as ``-`` (or the file name).

    Raises:
        InputError: for a missing or invalid file.
        ModelError: naming the element (type and id) that twinloop does not support.
    """
    from twinloop.models.sbml.assemble import build
    from twinloop.models.sbml.document import read

    doc = read(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    default = re.sub(r"[^a-z0-9-]+", "-", (doc.id if doc.id != "sbml_model" else Path(path).stem).lower())
    return build(doc, model_id or default.strip("-") or "sbml-model", f"sbml-{digest}")


__all__ = ["load_sbml"]
