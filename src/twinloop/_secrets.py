"""Masking secrets (passwords) before text reaches a message, a log, a manifest or PROV.

A leaf module like ``_config``: ``mask_url("postgresql://me:pw@host/db")`` gives
``postgresql://me:***@host/db``; :func:`mask_secrets` masks every URL in a text and
every ``password=`` / ``pwd=`` / ``passwd=`` setting of a libpq or ODBC connection
string. When it cannot tell where a password ends, it masks too much rather than
too little.
"""

from __future__ import annotations

import re

MASK = "***"
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
# scheme://user:password@host: the password may hold quotes, spaces or '@' (users write them
# unencoded), so it runs to the last '@' on its line before the next URL.
_USERINFO = re.compile(rf"(?P<head>{_SCHEME}[^\s:/@'\"]*):(?:(?!{_SCHEME})[^\n])*@")

# key=value connection strings. libpq: password='it''s' or \'-escaped, a bare value runs to whitespace.
# ODBC / ADO (a PWD key, or a key after ';'): PWD={a;b}}c}, or a bare value runs to ';', spaces included.
_QUOTED = (
    r"'(?:[^'\\\n]|\\.|'')*(?:'|$)",  # single-quoted (an unterminated one runs to the line's end)
    r'"(?:[^"\\\n]|\\.|"")*(?:"|$)',  # double-quoted
    r"\{(?:[^}\n]|\}\})*(?:\}|$)",  # ODBC braces, '}}' escapes '}'
)
_KEY = r"(?:password|passwd|pwd)\s*=\s*"
_ODBC = re.compile(
    rf"(?P<head>(?<=;)\s*{_KEY}|\bpwd\s*=\s*)(?:{'|'.join(_QUOTED)}|[^;\n]*)", re.IGNORECASE | re.MULTILINE
)
_KEYWORD = re.compile(rf"(?P<head>\b{_KEY})(?:{'|'.join(_QUOTED)}|[^;\n]*(?=;)|\S+)", re.IGNORECASE | re.MULTILINE)


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL (or connection-string setting) in it replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _ODBC.sub(lambda m: f"{m.group('head')}{MASK}", text)
    return _KEYWORD.sub(lambda m: f"{m.group('head')}{MASK}", text)


def mask_url(url: str | None) -> str | None:
    """A URL with its password masked (``None`` stays ``None``)."""
    return None if url is None else mask_secrets(str(url))
