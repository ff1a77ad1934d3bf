"""Database URLs as they may be shown: never with their password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_MASK = "****"

# key=value connection strings: password=secret or password='se cret'
_KV_PASSWORD = re.compile(r"""(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)""", re.IGNORECASE)
# URL query parameters: ?password=secret&...
_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


def mask_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``****``: the URL's userinfo
    password, a ``password=`` query parameter, or a ``password=`` key of a
    libpq key/value string. Anything unparseable is masked whole rather than
    risk printing a secret."""
    if "://" not in dsn:
        return _KV_PASSWORD.sub(lambda m: m.group(1) + _MASK, dsn)
    try:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            if ":" in userinfo:
                user = userinfo.split(":", 1)[0]
                netloc = f"{user}:{_MASK}@{hostinfo}"
        query = _QUERY_PASSWORD.sub(lambda m: m.group(1) + _MASK, parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return f"<unparseable database URL, {len(dsn)} characters, masked>"


def scrub(text: str, dsn: str) -> str:
    """``text`` (an error message from a driver) with the password of
    ``dsn`` removed wherever it appears verbatim."""
    password = _password_of(dsn)
    if password:
        text = text.replace(password, _MASK)
    return text


def _password_of(dsn: str) -> str | None:
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
        except ValueError:
            return None
        if parts.password:
            return parts.password
        m = _QUERY_PASSWORD.search(parts.query)
        return m.group(0).split("=", 1)[1] if m else None
    m = _KV_PASSWORD.search(dsn)
    if not m:
        return None
    value = m.group(2)
    return value[1:-1] if value.startswith("'") else value or None
