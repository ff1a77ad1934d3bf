"""What every command shares: the options that mean the same everywhere,
the one place where a failure becomes a one-line message and an exit code,
the clean stop on SIGINT/SIGTERM, the database probe, and the one timestamp
format.

Every error the CLI reports goes through :func:`error_line`; no handler
prints its own "error:" line for an exception, so the wording, the masking
of secrets and the exit codes are decided here once.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import logging
import os
import re
import signal
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from openmatch_persistence import _core
from openmatch_persistence.dsn import UNPARSABLE, is_sqlite_url, mask_dsn, scrub
from openmatch_persistence.errors import OpenMatchPersistenceError, OversizedFrameError

PROG = "openmatch-persistence"

EXIT_ERROR = 2
#: A frame longer than the reader's limit: a limit to raise, not damage, so
#: not the error status (``docs/recovery-rule.md``).
EXIT_OVERSIZED = 3
#: 128 + the signal's number, as a shell reports a process killed by it.
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM

#: Seconds the probe waits for PostgreSQL (libpq's minimum is 2).
PROBE_TIMEOUT = 3

log = logging.getLogger(__name__)


# --- options -------------------------------------------------------------------


def _url(text: str) -> str | None:
    # An empty URL means "none", as an empty OPENMATCH_DATABASE_URL does:
    # libpq would read "" as "every default" and connect somewhere unasked.
    return text.strip() or None


def add_max_payload_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-payload``: the reader's frame limit, for every command that
    reads a log another writer may have written with a higher one."""
    parser.add_argument(
        "--max-payload",
        type=_max_payload,
        default=_core.DEFAULT_MAX_PAYLOAD_LEN,
        metavar="BYTES",
        help="the longest frame payload accepted (default %(default)s); a longer length "
        "field stops the scan as 'oversized (limit N)': raise this if such frames are real",
    )


def _max_payload(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r}") from None
    if not 1 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"a payload limit is 1..{0xFFFFFFFF}: {text}")
    return value


def add_database_url_argument(parser: argparse.ArgumentParser, *, default_help: str) -> None:
    """``--database-url URL``, defaulting to ``$OPENMATCH_DATABASE_URL``
    (empty counts as unset)."""
    parser.add_argument(
        "--database-url",
        metavar="URL",
        type=_url,
        default=_url(os.environ.get("OPENMATCH_DATABASE_URL", "")),
        help="postgresql://user@host:port/db, a libpq key=value string, or sqlite:PATH "
        f"(default: $OPENMATCH_DATABASE_URL, else {default_help}); the password is never shown",
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON object on stdout"
    )


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every (sub)command parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from all_parsers(sub)


def add_verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """``-v`` before or after any command. Each level counts into a
    destination of its own (argparse copies a subcommand's namespace over
    its parent's, which would lose ``-v cmd -v``'s first count)."""
    for depth, p in enumerate(all_parsers(parser)):
        p.add_argument(
            "-v",
            "--verbose",
            dest=f"verbose_{depth}",
            action="count",
            default=argparse.SUPPRESS if depth else 0,
            help="more logging on stderr: -v info, -vv debug (tracebacks of internal errors)",
        )


def verbosity(args: argparse.Namespace) -> int:
    return sum(v for k, v in vars(args).items() if k.startswith("verbose_"))


# --- timestamps --------------------------------------------------------------------


def rfc3339(value: datetime.datetime | str | int | float | None) -> str | None:
    """The one timestamp format of the CLI: RFC 3339 in UTC with
    microseconds, ``2026-02-27T21:35:25.123456Z``. Takes a datetime (naive
    ones are UTC, as SQLite's are), RFC 3339 text, or seconds since 1970."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "T")
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # fromisoformat takes at most 6 fractional digits before 3.11.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        value = datetime.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Rfc3339Formatter(logging.Formatter):
    """Log lines stamped in the same format as everything else, one line
    each: a logged exception (a flusher's retried failure) shows as its
    type and message, and as a traceback only with ``tracebacks`` (-vv)."""

    def __init__(self, fmt: str, *, tracebacks: bool = False) -> None:
        super().__init__(fmt)
        self.tracebacks = tracebacks

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created) or ""

    def formatException(self, ei: Any) -> str:
        if self.tracebacks:
            return super().formatException(ei)
        return f"  ({ei[0].__name__}: {one_line(str(ei[1]))}; -vv for the traceback)"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if self.tracebacks else text.replace("\n  (", " (")


# --- errors --------------------------------------------------------------------------


class CliError(OpenMatchPersistenceError):
    """A usage or environment problem the CLI finds itself; ``code`` is
    the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: raised in the main thread so that every
    ``with``/``finally`` on the way out runs (flush, image, close). A
    BaseException, like KeyboardInterrupt, so no ``except Exception``
    swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def code(self) -> int:
        return 128 + self.signum


def one_line(text: str) -> str:
    """Drivers' messages span lines (libpq adds a hint on a second one)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


_OS_HINTS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EISDIR: "it is a directory, a file is needed",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.EADDRINUSE: "the address is already in use",
}


def _os_error(e: OSError) -> str:
    what = _OS_HINTS.get(e.errno or -1) or e.strerror or str(e)
    where = [os.fspath(f) for f in (e.filename, e.filename2) if f is not None]
    name = errno.errorcode.get(e.errno or -1)
    suffix = f" ({name})" if name else ""
    return f"{' -> '.join(map(str, where))}: {what}{suffix}" if where else f"{what}{suffix}"


def error_line(exc: BaseException, *, dsn: str | None = None) -> tuple[str, int]:
    """The one line (without the program's name) and the exit status that
    report ``exc``; ``dsn`` is the database URL in use, whose password is
    scrubbed from whatever is said. The only place the CLI turns an
    exception into words."""
    code = EXIT_ERROR
    if isinstance(exc, Stopped):
        return str(exc), exc.code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)", EXIT_SIGINT
    if isinstance(exc, CliError):
        message, code = str(exc), exc.code
    elif isinstance(exc, OSError) and isinstance(exc, OpenMatchPersistenceError):
        # The Rust core's I/O errors: (errno, "what path: reason (os error N)").
        message = exc.strerror if exc.errno is not None and exc.strerror else str(exc)
        hint = _OS_HINTS.get(exc.errno or -1)
        if hint and hint.lower() not in message.lower():
            message += f" ({hint})"
    elif isinstance(exc, OversizedFrameError):
        message, code = str(exc), EXIT_OVERSIZED
        if "--max-payload" not in message:
            # The writer's words name its API; the operator's way is here.
            message += (
                "; if frames that long are real, run the command again with "
                "--max-payload BYTES (at least the length field); "
                "`aof verify --max-payload BYTES` shows what the frame is, and "
                "`aof repair --max-payload BYTES` repairs a damaged length"
            )
    elif isinstance(exc, OpenMatchPersistenceError):
        message = str(exc)
    elif _is_psycopg_error(exc):
        message = f"PostgreSQL: {type(exc).__name__}: {exc}"
    elif isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        message = f"SQLite: {exc}: another process holds the database file; stop it and retry"
    elif isinstance(exc, sqlite3.Error):
        message = f"SQLite: {exc}"
    elif isinstance(exc, UnicodeDecodeError):
        message = (
            f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
            "(a binary file where text was expected?)"
        )
    elif isinstance(exc, ImportError) and "libpq" in str(exc).lower() + str(exc.name):
        message = (
            "PostgreSQL needs libpq: install the system's libpq, or "
            "`pip install 'openmatch-persistence[binary]'`"
        )
    elif isinstance(exc, OSError):
        message = _os_error(exc)
    else:
        message = (
            f"internal error: {type(exc).__name__}: {exc} "
            "(a bug; run with -vv for the traceback and report it)"
        )
        code = 70  # EX_SOFTWARE
    if dsn:
        message = scrub(message, dsn)
    return one_line(message) or type(exc).__name__, code


def _is_psycopg_error(exc: BaseException) -> bool:
    # Not imported unless loaded: the SQLite-only CLI runs without libpq.
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


def report(exc: BaseException, *, dsn: str | None = None) -> int:
    """Prints ``exc`` as one line on stderr; returns the exit status."""
    message, code = error_line(exc, dsn=dsn)
    if code == 70 or log.isEnabledFor(logging.DEBUG):
        log.debug("traceback of the error above", exc_info=exc)
    stopped = isinstance(exc, (Stopped, KeyboardInterrupt))
    print(f"{PROG}: {message}" if stopped else f"{PROG}: error: {message}", file=sys.stderr)
    return code


# --- signals -----------------------------------------------------------------------


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` in the main thread, once:
    the command then unwinds through its ``with`` blocks (a Persistence
    flushes, writes its image and closes). A second signal while it does
    so ends the process at once: everything acknowledged is in the AOF,
    and recovery replays it."""
    stopping: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if stopping:
            os.write(2, f"{PROG}: second signal, exiting at once\n".encode())
            os._exit(128 + signum)
        stopping.append(signum)
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --- the database probe ----------------------------------------------------------


def probe_database(url: str | None, timeout: int = PROBE_TIMEOUT) -> None:
    """Connects once, directly, to a PostgreSQL ``url`` and raises
    :class:`CliError` with libpq's reason (host, port, refused / timeout /
    authentication) when that fails. The pool would instead retry in the
    background and report only "couldn't get a connection" when its own
    timeout ran out."""
    if url is None or is_sqlite_url(url):
        return
    label = mask_dsn(url)
    if label == UNPARSABLE:
        raise CliError(f"{UNPARSABLE}: libpq cannot parse it (check its brackets and quoting)")
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True):
            pass
    except psycopg.Error as e:
        reason = one_line(scrub(str(e), url))
        raise CliError(f"cannot connect to {label}: {reason}") from None


#: Seconds the SQLite probe waits for another process's write lock.
SQLITE_PROBE_TIMEOUT = 2.0


def probe_sqlite(path: str | Path | None, timeout: float = SQLITE_PROBE_TIMEOUT) -> None:
    """Raises :class:`CliError` at once when another process holds the
    write lock of the existing SQLite file ``path`` (the store itself would
    wait 30 s for it, then fail). Creates nothing: a missing file is left to
    the command."""
    if path is None or str(path) == ":memory:" or not Path(path).is_file():
        return
    try:
        conn = sqlite3.connect(
            f"{Path(path).absolute().as_uri()}?mode=rw", uri=True, timeout=timeout
        )
    except sqlite3.Error:
        return  # the command's own open reports it, with its own words
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise CliError(
                f"sqlite:{path}: the database is locked by another process "
                f"(waited {timeout:g} s); stop it and retry"
            ) from None
    finally:
        conn.close()


def sqlite_label(path: str | Path) -> str:
    return f"sqlite:{os.fspath(path)}"


def json_default(value: Any) -> Any:
    """Values json cannot write itself, as the CLI shows them."""
    if isinstance(value, datetime.datetime):
        return rfc3339(value)
    if isinstance(value, Path):
        return os.fspath(value)
    return str(value)
