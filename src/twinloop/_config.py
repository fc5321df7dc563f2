"""Process-wide JAX settings: float64 and the persistent compilation cache.

Imported first by ``twinloop/__init__.py`` so the settings hold before any array
is created.
"""

from __future__ import annotations

import os
from pathlib import Path

# Equinox runtime checks raise through a host callback by default, which keeps the
# persistent compilation cache from storing diffrax solves; NaN-on-error lets the
# cache work, and the engine reports failed solves from diffrax's result codes.
os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax
import platformdirs


def progress_shown() -> bool:
    """Progress bars are on unless ``TWINLOOP_PROGRESS=0`` (scripts, CI logs)."""
    return os.environ.get("TWINLOOP_PROGRESS", "1") != "0"


def cache_dir() -> Path:
    """Return the directory of the persistent JAX compilation cache.

    ``TWINLOOP_CACHE_DIR`` overrides the default user cache directory.
    """
    root = os.environ.get("TWINLOOP_CACHE_DIR") or platformdirs.user_cache_dir("twinloop")
    return Path(root) / "jax"


def configure_jax() -> None:
    """Enable float64 and the persistent compilation cache (idempotent)."""
    jax.config.update("jax_enable_x64", True)
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


configure_jax()
