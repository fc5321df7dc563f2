"""Opening a product given on the command line without trusting it.

:func:`open_product` refuses, with one :class:`~twinloop.errors.InputError` naming the
option, the folder and the fix: a path that is missing or not a folder, a missing,
oversized, truncated or malformed ``manifest.json``, a model that is not registered,
a table the manifest does not list or that is missing, and any file whose SHA-256
differs from the manifest's (a corrupt or edited parquet file). Commands that read a
product's tables (``learn predictor``, ``govern ...``) open it through here first, so
a damaged product is refused before anything is computed or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twinloop.errors import InputError

MAX_MANIFEST_BYTES = 16 << 20
TABLES = ("patients", "observations", "outcomes")
REGENERATE = "regenerate it with `twinloop cohort generate` (or copy it again)"


def open_product(path: str | Path, field: str) -> Any:
    """The :class:`~twinloop.products.dataset.Product` at ``path``, checked (``field``
    names the argument or option in messages, e.g. ``'--reference'``)."""
    from twinloop.products.dataset import PARTS, Product

    root = Path(path)
    if not root.exists():
        raise InputError(
            f"{field} '{root}' does not exist; give a product folder that `twinloop cohort generate` wrote."
        )
    if not root.is_dir():
        raise InputError(f"{field} '{root}' is a file; give a product folder that `twinloop cohort generate` wrote.")
    file = root / "manifest.json"
    if not file.is_file():
        unfinished = " (it holds an unfinished run: continue it with --resume)" if (root / PARTS).exists() else ""
        raise InputError(f"{field} '{root}' is not a twinloop product: it has no manifest.json{unfinished}.")
    manifest = _manifest(file, field)
    product = Product(root, manifest)
    _check_files(product, field)
    return product


def _manifest(file: Path, field: str) -> dict[str, Any]:
    from twinloop.models.registry import available

    if file.stat().st_size > MAX_MANIFEST_BYTES:
        raise InputError(f"{field} '{file}' is larger than {MAX_MANIFEST_BYTES} bytes; it is not a product manifest.")
    try:
        manifest = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{field} '{file}' is not UTF-8 text (a corrupt manifest); {REGENERATE}.") from None
    except json.JSONDecodeError as err:
        raise InputError(
            f"{field} '{file}' is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}; truncated or "
            f"corrupt); {REGENERATE}."
        ) from None
    except RecursionError:
        raise InputError(f"{field} '{file}' is nested too deeply to be a product manifest; {REGENERATE}.") from None
    model = manifest.get("model") if isinstance(manifest, dict) else None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(model, dict) or not isinstance(files, dict) or not isinstance(manifest.get("name"), str):
        raise InputError(
            f"{field} '{file}' lacks the product fields name, model and files (or they have the wrong type); "
            f"it was not written by `twinloop cohort generate`: {REGENERATE}."
        )
    if model.get("id") not in available():
        raise InputError(
            f"{field} '{file}' names the model {str(model.get('id'))[:60]!r}, which is not registered "
            f"(available: {', '.join(available())}); give a product of a registered model."
        )
    return manifest


def _check_files(product: Any, field: str) -> None:
    """Every table present, every listed file a plain name with the manifest's SHA-256."""
    from twinloop._provenance import sha256_file

    files: dict[str, Any] = product.manifest["files"]
    missing = [f"{t}.parquet" for t in TABLES if f"{t}.parquet" not in files]
    if missing:
        raise InputError(f"{field} '{product.path}': manifest.json does not list {', '.join(missing)}; {REGENERATE}.")
    for name, info in files.items():
        digest = info.get("sha256") if isinstance(info, dict) else None
        if not isinstance(name, str) or Path(name).name != name or name.startswith(".") or not isinstance(digest, str):
            raise InputError(
                f"{field} '{product.path}': manifest.json lists the file {str(name)[:60]!r} without a plain file "
                f"name and SHA-256; {REGENERATE}."
            )
        path = product.path / name
        if not path.is_file():
            raise InputError(f"{field} '{product.path}' lacks {name}, which its manifest lists; {REGENERATE}.")
        if sha256_file(path) != digest:
            raise InputError(
                f"{field} '{product.path}': {name} does not match the SHA-256 in manifest.json (corrupt or changed "
                f"after it was written); {REGENERATE}."
            )
