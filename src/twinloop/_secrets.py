"""Masking secrets (URL passwords) before text reaches a message, a log, a manifest or PROV.

A leaf module like ``_config``: ``mask_url("postgresql://me:pw@host/db")`` gives
``postgresql://me:***@host/db``; :func:`mask_secrets` masks every URL in a text.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@ ... (the password runs to the last '@' before whitespace or a quote)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):[^\s'\"]*@")

# key=value connection strings (libpq): password=...
_KEYWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'[^']*'|\S+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL (or ``password=`` setting) in it replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return _KEYWORD.sub(lambda m: f"{m.group('head')}{MASK}", text)


def mask_url(url: str | None) -> str | None:
    """A URL with its password masked (``None`` stays ``None``)."""
    return None if url is None else mask_secrets(str(url))
