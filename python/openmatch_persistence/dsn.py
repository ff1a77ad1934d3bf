"""Database URLs as they may be shown: never with their password.

Parsing is psycopg's (``psycopg.conninfo.conninfo_to_dict``, which is libpq's
own ``PQconninfoParse``), not a regular expression: it is the parser that
decides what the password is when psycopg connects, so URLs, percent
escapes, ``key=value`` strings with quotes and backslash escapes, and a
password given twice are all read exactly as the driver reads them. A
string libpq cannot parse is never shown at all, since there is no telling
which part of it is the secret.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

_MASK = "****"

#: What is shown in place of a connection string that libpq cannot parse.
UNPARSABLE = "<unparsable database URL, not shown>"

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_sqlite_url(dsn: str) -> bool:
    return dsn.startswith("sqlite:")


def parse_conninfo(dsn: str) -> dict[str, str] | None:
    """The connection parameters of a PostgreSQL URL or ``key=value``
    string as libpq reads them, or None if libpq cannot parse it."""
    # Imported here: psycopg needs libpq, which only PostgreSQL users need
    # (the embedded SQLite store works without it).
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return None
    return {k: str(v) for k, v in params.items() if v is not None}


def mask_dsn(dsn: str) -> str:
    """``dsn`` as it may be printed: a URL stays a URL and a ``key=value``
    string stays one, every password replaced by ``****``. A string libpq
    cannot parse becomes :data:`UNPARSABLE`; a ``sqlite:`` URL (no password)
    is returned as it is."""
    if is_sqlite_url(dsn):
        return dsn
    params = parse_conninfo(dsn)
    if params is None:
        return UNPARSABLE
    if "password" in params:
        params["password"] = _MASK
    if dsn.lstrip().startswith(_URL_SCHEMES):
        return _as_url(dsn.lstrip().split("://", 1)[0], params)
    return " ".join(f"{k}={_kv_quote(v)}" for k, v in params.items())


def _kv_quote(value: str) -> str:
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _as_url(scheme: str, params: dict[str, str]) -> str:
    """A URL equivalent to ``params``, rebuilt from the parsed values (so no
    byte of the original password can survive in it)."""
    params = dict(params)
    user = params.pop("user", None)
    password = params.pop("password", None)
    dbname = params.pop("dbname", None)
    hosts = params.pop("host", "").split(",") if "host" in params else []
    ports = params.pop("port", "").split(",") if "port" in params else []
    netloc = ""
    if user is not None or password is not None:
        netloc = quote(user or "", safe="")
        if password is not None:
            netloc += ":" + password
        netloc += "@"
    if hosts and any(h.startswith("/") for h in hosts):
        # A Unix socket directory cannot stand in the authority part.
        params = {"host": ",".join(hosts), **({"port": ",".join(ports)} if ports else {}), **params}
        hosts, ports = [], []
    pairs = []
    for i, host in enumerate(hosts or ([""] if ports else [])):
        shown = f"[{host}]" if ":" in host else quote(host, safe="")
        port = ports[i] if i < len(ports) else (ports[0] if len(ports) == 1 else "")
        pairs.append(f"{shown}:{port}" if port else shown)
    netloc += ",".join(pairs)
    url = f"{scheme}://{netloc}"
    if dbname is not None:
        url += "/" + quote(dbname, safe="")
    if params:
        url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return url


def secrets_of(dsn: str) -> set[str]:
    """Every form in which the password of ``dsn`` could appear in a
    message: as parsed, and as written in the URL (escaped or not)."""
    found: set[str] = set()
    params = parse_conninfo(dsn)
    if params is not None and params.get("password"):
        found.add(params["password"])
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
            raw = parts.netloc.rpartition("@")[0].partition(":")[2] if "@" in parts.netloc else ""
        except ValueError:
            raw = ""
        for value in (raw, unquote(raw)):
            if value:
                found.add(value)
        for item in dsn.partition("?")[2].split("&"):
            key, _, value = item.partition("=")
            if key.lower() == "password" and value:
                found.update({value, unquote(value)})
    return found


def scrub(text: str, dsn: str) -> str:
    """``text`` (an error message from a driver) as it may be shown: the
    whole ``dsn`` where it is quoted is replaced by its masked form, and
    every form of its password by ``****``. When ``dsn`` cannot be parsed,
    the message is not shown at all: libpq's parse errors quote the string
    (or a piece of it), and a driver never got further than parsing it."""
    if parse_conninfo(dsn) is None and not is_sqlite_url(dsn):
        return f"{UNPARSABLE}: libpq cannot parse it"
    if dsn:
        text = text.replace(dsn, mask_dsn(dsn))
    for secret in sorted(secrets_of(dsn), key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text
