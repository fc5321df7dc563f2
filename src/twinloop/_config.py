"""Process-wide JAX settings: float64 and the persistent compilation cache.

Importing this module is cheap: it imports neither JAX nor anything else heavy.
``ensure_jax()`` applies the settings, once per process. Every subpackage whose
modules use JAX (``models``, ``simulate``, ``calibrate``, ``learn``, ``twin``) calls
it first thing in its ``__init__``, and Python runs a package's ``__init__`` before
any module inside it, so the settings hold before any of them creates an array.
"""

from __future__ import annotations

import os
from pathlib import Path

# Equinox runtime checks raise through a host callback by default, which keeps the
# persistent compilation cache from storing diffrax solves; NaN-on-error lets the
# cache work, and the engine reports failed solves from diffrax's result codes.
# Equinox reads the variable when it is imported, so it is set before that.
os.environ.setdefault("EQX_ON_ERROR", "nan")

_jax_configured = False


def progress_shown() -> bool:
    """Progress bars are on unless ``TWINLOOP_PROGRESS=0`` (scripts, CI logs)."""
    return os.environ.get("TWINLOOP_PROGRESS", "1") != "0"


def cache_dir() -> Path:
    """Return the directory of the persistent JAX compilation cache.

    ``TWINLOOP_CACHE_DIR`` overrides the default user cache directory.
    """
    root = os.environ.get("TWINLOOP_CACHE_DIR")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("twinloop")
    return Path(root) / "jax"


def configure_jax() -> None:
    """Enable float64 and the persistent compilation cache (idempotent)."""
    global _jax_configured
    import jax

    jax.config.update("jax_enable_x64", True)
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    _jax_configured = True


def ensure_jax() -> None:
    """Apply ``configure_jax()`` the first time JAX is needed in this process; later calls cost nothing.

    Example:
        >>> from twinloop._config import ensure_jax
        >>> ensure_jax()
        >>> import jax
        >>> jax.config.jax_enable_x64
        True
    """
    if not _jax_configured:
        configure_jax()
