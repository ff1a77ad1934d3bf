"""The command line as an operator meets it: conventions (--version, -v
anywhere, --json, help for every option), every failure as one line and a
non-zero exit, secrets never shown, a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultkit import run_cli

from openmatch_persistence import __version__
from openmatch_persistence.cli import build_parser, main
from openmatch_persistence.cli.common import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    Stopped,
    all_parsers,
    error_line,
    rfc3339,
    verbosity,
)
from openmatch_persistence.errors import AofError
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.store import sqlite_path_of
from openmatch_persistence.store.migrate import SQLITE_MIGRATIONS


@pytest.fixture(autouse=True)
def _no_database_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENMATCH_DATABASE_URL", raising=False)
    monkeypatch.delenv("OPENMATCH_DATABASE_SCHEMA", raising=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    assert main(["simulate", "--data-dir", str(d), "--ops", "300", "--seed", "3"]) == 0
    return d


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("openmatch-persistence: ")
    return lines[0]


# --- conventions ---------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"openmatch-persistence {__version__}"


def test_verbose_before_and_after_the_command_adds_up() -> None:
    parser = build_parser()
    assert verbosity(parser.parse_args(["status", "d"])) == 0
    assert verbosity(parser.parse_args(["-v", "status", "d"])) == 1
    assert verbosity(parser.parse_args(["status", "d", "-v"])) == 1
    assert verbosity(parser.parse_args(["-v", "aof", "-v", "stats", "p", "-v"])) == 3


def test_every_option_has_help() -> None:
    missing = []
    for parser in all_parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help:
                missing.append(f"{parser.prog}: {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_every_reporting_command_takes_json() -> None:
    parser = build_parser()
    commands = [
        ["simulate"], ["status", "d"], ["recover", "d"], ["snapshot", "d"], ["compact", "d"],
        ["migrate"], ["migrate", "info"], ["aof", "verify", "p"], ["aof", "stats", "p"],
        ["aof", "repair", "p", "--dry-run"],
    ]  # fmt: skip
    for argv in commands:
        assert parser.parse_args([*argv, "--json"]).json is True, argv


def test_json_output_of_the_commands(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["status", str(data_dir)],
        ["recover", str(data_dir)],
        ["snapshot", str(data_dir)],
        ["compact", str(data_dir)],
        ["migrate", "--data-dir", str(data_dir)],
        ["migrate", "info", "--data-dir", str(data_dir)],
        ["aof", "verify", str(data_dir)],
        ["aof", "stats", str(data_dir)],
        ["aof", "repair", str(data_dir), "--dry-run"],
    ):
        assert main([*argv, "--json"]) == 0, argv
        out = capsys.readouterr().out
        assert isinstance(json.loads(out), dict), (argv, out)


def test_simulate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--data-dir", str(tmp_path / "d"), "--ops", "100", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["operations"] == 100 and out["recovery_check"]["ok"] is True


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("2026-02-27T21:35:25.123456789Z", "2026-02-27T21:35:25.123456Z"),
        ("2026-02-27 21:35:25", "2026-02-27T21:35:25.000000Z"),
        ("2026-02-27T22:35:25+01:00", "2026-02-27T21:35:25.000000Z"),
        (0, "1970-01-01T00:00:00.000000Z"),
    ],
)
def test_one_timestamp_format(value: str | int, text: str) -> None:
    assert rfc3339(value) == text


def test_status_shows_flushed_at_in_rfc3339(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(data_dir), "--json"]) == 0
    stamp = json.loads(capsys.readouterr().out)["snapshot"]["flushed_at"]
    assert rfc3339(stamp) == stamp
    assert main(["status", str(data_dir)]) == 0
    assert f"flushed at {stamp}" in capsys.readouterr().out


# --- failures: one line, non-zero, no traceback ---------------------------------------------


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    for argv in (["status", str(f)], ["simulate", "--data-dir", str(f), "--ops", "1"]):
        proc = run_cli(*argv)
        assert proc.returncode == 2
        assert str(f) in one_error_line(proc.stderr)


def test_an_sqlite_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d" / "state.sqlite3").mkdir(parents=True)
    proc = run_cli("simulate", "--data-dir", str(tmp_path / "d"), "--ops", "1")
    assert proc.returncode == 2
    assert "is a directory" in one_error_line(proc.stderr)


def test_aof_encode_of_a_binary_file_or_into_a_missing_directory(tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    binary.write_bytes(b"\x00\xff\xfe" * 10)
    proc = run_cli("aof", "encode", str(binary), str(tmp_path / "out.aof"))
    assert proc.returncode == 2 and "not UTF-8" in one_error_line(proc.stderr)
    good = tmp_path / "ops.jsonl"
    good.write_text('{"EpochAdvanced":[1,"Collect"]}\n')
    proc = run_cli("aof", "encode", str(good), str(tmp_path / "no" / "such" / "out.aof"))
    assert proc.returncode == 2 and "does not exist" in one_error_line(proc.stderr)
    assert not (tmp_path / "out.aof").exists()


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (OSError(errno.EROFS, "Read-only file system", "/data/state.sqlite3"), "read-only"),
        (OSError(errno.ENOSPC, "No space left on device", "/data/aof"), "disk is full"),
        (AofError(errno.EROFS, "open /data/aof: Read-only file system (os error 30)"), "read-only"),
        (sqlite3.OperationalError("database is locked"), "another process"),
    ],
)
def test_environment_failures_are_one_line(
    error: BaseException,
    words: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from openmatch_persistence import store

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(store, "open_store", fail)
    monkeypatch.setattr("openmatch_persistence.cli.simulate.Persistence.open", fail)
    for argv in (["status", str(data_dir)], ["simulate", "--data-dir", str(data_dir)]):
        assert main(argv) == 2
        assert words in one_error_line(capsys.readouterr().err)


def test_an_internal_error_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr("openmatch_persistence.cli.simulate.Persistence.open", boom)
    assert main(["simulate", "--data-dir", str(tmp_path)]) == 70
    assert "internal error: KeyError" in one_error_line(capsys.readouterr().err)


def test_error_line_maps_stops_to_their_exit_codes() -> None:
    assert error_line(Stopped(signal.SIGINT)) == ("stopped by SIGINT", EXIT_SIGINT)
    assert error_line(Stopped(signal.SIGTERM)) == ("stopped by SIGTERM", EXIT_SIGTERM)
    assert error_line(KeyboardInterrupt())[1] == EXIT_SIGINT


# --- databases -------------------------------------------------------------------------


def test_an_unparsable_url_is_never_echoed(data_dir: Path) -> None:
    url = "postgresql://postgres:S3cret@[::1:5432/x"
    proc = run_cli("recover", str(data_dir), "--database-url", url)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "S3cret" not in line and "unparsable" in line


def test_an_unreachable_database_fails_at_once_with_the_reason(
    data_dir: Path, database_url: str
) -> None:
    # A port nobody listens on: the probe reports libpq's reason (host,
    # port, refused) instead of the pool's "couldn't get a connection".
    with socket_nobody_listens_on() as port:
        url = f"postgresql://postgres:S3cret@127.0.0.1:{port}/x"
        proc = run_cli("status", str(data_dir), "--database-url", url)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "S3cret" not in line and "****" in line
    assert f'"127.0.0.1", port {port}' in line and "refused" in line.lower()


@pytest.mark.postgres
def test_a_wrong_role_is_named(data_dir: Path, database_url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(database_url)
    params["user"] = "no_such_role_xyz"
    proc = run_cli("status", str(data_dir), "--database-url", make_conninfo("", **params))
    assert proc.returncode == 2
    assert 'role "no_such_role_xyz" does not exist' in one_error_line(proc.stderr)


def socket_nobody_listens_on() -> _FreePort:
    return _FreePort()


class _FreePort:
    """A port that was free a moment ago (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        pass


def test_an_empty_database_url_variable_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENMATCH_DATABASE_URL", "")
    Persistence.open(tmp_path / "d").close()  # a data directory of its own
    assert main(["migrate", "--data-dir", str(tmp_path / "d"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["database"] == f"sqlite:{tmp_path / 'd' / 'state.sqlite3'}"


def test_migrate_honours_the_database_url_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "elsewhere.sqlite3"
    monkeypatch.setenv("OPENMATCH_DATABASE_URL", f"sqlite://{target}?mode=rwc")
    assert main(["migrate", "--data-dir", str(tmp_path / "unused"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["applied"]
    assert target.exists() and not (tmp_path / "unused").exists()


def test_migrate_info_and_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "migrations"
    source.mkdir()
    first, *rest = sorted(SQLITE_MIGRATIONS.glob("*.sql"))
    shutil.copy(first, source)
    # A database file of its own (sqlx's URL form): migrate makes no data dir.
    d = ["--database-url", f"sqlite:{tmp_path / 'db.sqlite3'}"]
    # info changes nothing: no database file appears.
    assert main(["migrate", "info", *d, "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)["migrations"]
    assert {e["state"] for e in entries} == {"pending"} and len(entries) == 1 + len(rest)
    assert not (tmp_path / "db.sqlite3").exists()
    assert main(["migrate", *d, "--source", str(source), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["applied"] == [entries[0]["version"]]
    assert main(["migrate", "info", *d]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[1].startswith(f"{entries[0]['version']}/installed ")
    assert all("/pending " in line for line in text[2:])
    # A changed file is reported as sqlx reports it, with exit 1.
    changed = source / first.name
    changed.write_text(changed.read_text() + "\n-- changed\n")
    assert main(["migrate", "info", *d, "--source", str(source)]) == 1
    assert "/different checksum" in capsys.readouterr().out


def test_migrate_source_must_be_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--data-dir", str(tmp_path), "--source", str(tmp_path / "no")]) == 2
    assert "not a directory" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///tmp/a.db?mode=rwc", "/tmp/a.db"),
        ("sqlite://a.db", "a.db"),
        ("sqlite:a%20b.db", "a b.db"),
        ("sqlite::memory:", ":memory:"),
        ("sqlite://x.db?mode=memory", ":memory:"),
    ],
)
def test_sqlite_urls_open_the_file_sqlx_opens(url: str, path: str) -> None:
    assert sqlite_path_of(url) == path


# --- signals ---------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_simulate_cleanly(tmp_path: Path, signum: int, code: int) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "openmatch_persistence", "simulate", "--data-dir", str(data),
         "--ops", "10000000", "--rate", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        segment = data / "aof" / "00000000000000000000.aof"
        deadline = time.monotonic() + 60
        # Running, and past its first appends (the loop, not the open).
        while not (segment.exists() and segment.stat().st_size > 4096):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    assert err.splitlines()[-1] == f"openmatch-persistence: stopped by {name}"
    # Flushed, image written, closed: the database holds everything.
    status = json.loads(run_cli("status", str(data), "--json").stdout)
    assert status["flush_lag_bytes"] == 0 and status["snapshot"]["position"] == status["aof_end"]
    assert os.stat(data / "state.sqlite3").st_mode & 0o077 == 0


def test_an_sqlite_file_locked_by_another_process_fails_at_once(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = sqlite3.connect(data_dir / "state.sqlite3", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        for argv in (["status", str(data_dir)], ["migrate", "--data-dir", str(data_dir)]):
            assert main(argv) == 2
            assert "locked by another process" in one_error_line(capsys.readouterr().err)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert main(["status", str(data_dir)]) == 0


def test_logged_exceptions_are_one_line_unless_debugging() -> None:
    import logging

    from openmatch_persistence.cli.common import Rfc3339Formatter

    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, "f", 1, "failed", None, sys.exc_info())
    quiet = Rfc3339Formatter("%(asctime)s %(message)s").format(record)
    assert "\n" not in quiet and quiet.endswith(
        "failed (ValueError: bad thing; -vv for the traceback)"
    )
    assert rfc3339(quiet.split(" ")[0]) == quiet.split(" ")[0]
    record.exc_text = None
    loud = Rfc3339Formatter("%(message)s", tracebacks=True).format(record)
    assert "Traceback" in loud
