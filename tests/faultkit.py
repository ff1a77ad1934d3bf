"""Shared helpers of the fault suite (tests/test_faults_*.py): frame
arithmetic, full-replay digests, the local PostgreSQL cluster and fresh
schemas, and a fork server that starts crash victims cheaply."""

from __future__ import annotations

import bisect
import contextlib
import glob
import itertools
import os
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.compaction import CompactionPolicy
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.workload import Workload

NO_COMPACTION = CompactionPolicy(max_bytes=None, max_age=None)
HAVE_CLUSTER = bool(glob.glob("/etc/postgresql/*/main"))


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The console script in a fresh interpreter, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "openmatch_persistence", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def frame_ends(ops: Sequence[om.Operation], base: int = 0) -> list[int]:
    """The position just past each operation's frame."""
    ends, at = [], base
    for op in ops:
        at += len(om.encode(op))
        ends.append(at)
    return ends


def whole_frames(ends: Sequence[int], cut: int) -> int:
    """How many frames end at or before ``cut``."""
    return bisect.bisect_right(ends, cut)


def replay_digest(ops: Sequence[om.Operation]) -> str:
    """The digest of applying ``ops`` to an empty state, in order."""
    state = _core.State()
    position = 0
    for op in ops:
        position += len(om.encode(op))
        state.apply(op, position)
    return state.digest()


def prefix_digests(ops: Sequence[om.Operation], counts: set[int]) -> dict[int, str]:
    """``replay_digest(ops[:n])`` for every n in ``counts``, in one pass."""
    state = _core.State()
    out = {}
    if 0 in counts:
        out[0] = state.digest()
    position = 0
    for i, op in enumerate(ops, 1):
        position += len(om.encode(op))
        state.apply(op, position)
        if i in counts:
            out[i] = state.digest()
    return out


def log_records(aof_dir: Path, start: int | None = None) -> list[tuple[int, om.Operation]]:
    """Every (end position, operation) of the AOF; asserts the log is clean."""
    scanner = _core.scan(aof_dir, start=start)
    records = list(scanner)
    assert scanner.result is not None and scanner.result.is_clean, scanner.result
    return records


def write_segment(aof_dir: Path, start: int, data: bytes) -> Path:
    aof_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = aof_dir / _core.segment_file_name(start)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


# --- PostgreSQL -------------------------------------------------------------------


@contextlib.contextmanager
def fresh_schema(database_url: str, prefix: str = "test_faults") -> Iterator[str]:
    """A URL whose search_path is a new schema, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in database_url else "?"
    try:
        yield f"{database_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        ensure_running(database_url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def schema_names(
    database_url: str, count: int, prefix: str = "test_schemas"
) -> Iterator[list[str]]:
    """``count`` fresh schema names, not created (the code under test
    creates them), each dropped afterwards if it exists."""
    names = [f"{prefix}_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    try:
        yield names
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def pg_ctl(action: str) -> subprocess.CompletedProcess[str]:
    """``pg_ctlcluster`` on the local cluster (its stop is fast mode:
    sessions are disconnected, open transactions roll back)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    args = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def ensure_running(database_url: str) -> None:
    """Starts the cluster if it is down and waits until it accepts sessions."""
    if HAVE_CLUSTER and pg_ctl("status").returncode != 0:
        pg_ctl("start")
    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(database_url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- crash victims ------------------------------------------------------------------

#: Operations each victim thread may append; far more than it gets to.
VICTIM_STREAM = 100_000
#: A victim thread tries an operation the journal refuses this often.
POISON_EVERY = 25
POISON = om.BalanceUpdated(uuid.UUID(int=0xBAD), "USDT", Decimal(-1), Decimal(0))
ACK = struct.Struct("<IIQ")  # thread, index in its stream, acknowledged position


def victim_stream(round_: int, thread: int) -> Iterator[om.Operation]:
    """Thread ``thread``'s operations in round ``round_``: its own users and
    epochs, so that the streams of all threads and rounds interleave into a
    consistent state in whatever order the writer picks. Epochs finalize in
    id order (docs/state.md), so only thread 0 runs whole epochs (orders,
    seals, trades, balance moves); the others open one epoch with a higher
    id than thread 0 will reach and keep adding orders and cancels to it."""
    key = round_ * 64 + thread
    return iter(
        Workload(
            seed=key,
            users=4,
            orders_per_epoch=12 if thread == 0 else 10**9,
            first_epoch=key * 1_000_000,
        )
    )


#: What a victim sends instead of an ACK once it stands at its chosen kill
#: point (``ACK`` with this thread number; the index says which point).
MARK = 0xFFFF_FFFF
#: Where a victim may stop to be killed during recovery, in the order
#: recovery passes them: before the snapshot is loaded, before the AOF is
#: opened (its torn tail cut) and replayed, and after recovery, before the
#: first append.
RECOVERY_POINTS = ("load_snapshot", "replay", "recovered")
#: Appends per thread before a "torn" victim stops and tears the tail.
TORN_AFTER = 20


def _stop_at(point: str, acks: Connection) -> None:
    acks.send_bytes(ACK.pack(MARK, RECOVERY_POINTS.index(point), 0))
    time.sleep(3600)  # the parent kills us here


def _hold_recovery_at(point: str, acks: Connection) -> None:
    """Makes recovery stop at ``point`` (patching this process only)."""
    from openmatch_persistence import persistence, recovery

    if point == "recovered":
        recover = persistence.recover  # type: ignore[attr-defined]

        def recover_then_stop(*args: Any, **kw: Any) -> Any:
            opened = recover(*args, **kw)
            _stop_at(point, acks)
            return opened

        persistence.recover = recover_then_stop  # type: ignore[attr-defined]
        return
    load_base = recovery.load_base

    def load_base_around(*args: Any, **kw: Any) -> Any:
        if point == "load_snapshot":
            _stop_at(point, acks)
        base = load_base(*args, **kw)
        _stop_at(point, acks)
        return base

    recovery.load_base = load_base_around


def tear_tail(aof_dir: Path, frame: bytes, cut: int) -> None:
    """Appends the first ``cut`` bytes of ``frame`` to the last segment, as
    a write cut short leaves it (the writer must be idle)."""
    _, path, _ = _core.list_segments(aof_dir)[-1]
    with open(path, "ab") as f:
        f.write(frame[:cut])


def victim(
    data_dir: str,
    database_url: str | None,
    round_: int,
    threads: int,
    fsync: _core.FsyncPolicy,
    acks: Connection,
    plan: str = "run",
) -> None:
    """Runs in a forked child until it is killed: opens (recovers) the data
    directory and appends from ``threads`` threads, sending one ACK record
    per acknowledged append (one write each, so never torn by the kill).

    ``plan`` puts the kill at a chosen point rather than a random moment:
    one of :data:`RECOVERY_POINTS` stops recovery there; "torn" stops after
    :data:`TORN_AFTER` appends per thread and leaves a torn frame at the end
    of the log. Either then sends a :data:`MARK` and waits to be killed."""
    if plan in RECOVERY_POINTS:
        _hold_recovery_at(plan, acks)
    p = Persistence.open(
        data_dir,
        database_url=database_url,
        fsync=fsync,
        flush_interval=0.02,
        compaction=NO_COMPACTION,
    )
    lock = threading.Lock()
    stream_length = TORN_AFTER if plan == "torn" else VICTIM_STREAM

    def run(thread: int) -> None:
        for index, op in enumerate(victim_stream(round_, thread)):
            if index == stream_length:
                break
            if index % POISON_EVERY == POISON_EVERY - 1:
                # Refused (a negative balance): it must never leave a byte
                # in the log, where the parent's check would find an
                # operation never sent.
                try:
                    p.append(POISON)
                except om.OperationRefusedError:
                    pass
                else:
                    os._exit(3)  # the parent sees a child that died on its own
            position = p.append(op)
            with lock:
                acks.send_bytes(ACK.pack(thread, index, position))

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if plan == "torn":
        # The next operation of thread 0, cut at a point the round picks.
        frame = om.encode(next(itertools.islice(victim_stream(round_, 0), TORN_AFTER, None)))
        tear_tail(p.aof_dir, frame, 1 + round_ % (len(frame) - 1))
        acks.send_bytes(ACK.pack(MARK, len(RECOVERY_POINTS), 0))
    time.sleep(3600)  # the parent kills us long before


# --- two data directories, one database (tests/test_identity.py) ---------------------


def balance_op(node: int, n: int) -> om.Operation:
    """Data directory ``node``'s ``n``-th balance: its own user, so the
    balances of two data directories never share a key."""
    return om.BalanceUpdated(uuid.UUID(int=(node << 64) + n), "USDT", Decimal(n + 1), Decimal(0))


def node_balances(state: _core.State, node: int) -> set[int]:
    """The ``n`` of every balance of data directory ``node`` in ``state``."""
    return {b.user_id.int & (2**64 - 1) for b in state.balances() if b.user_id.int >> 64 == node}


_APPEND_AND_WAIT = """
import sys
from faultkit import NO_COMPACTION, balance_op
from openmatch_persistence.persistence import Persistence
data_dir, url, node, first, count = sys.argv[1], sys.argv[2] or None, *map(int, sys.argv[3:6])
p = Persistence.open(data_dir, database_url=url, compaction=NO_COMPACTION)
for n in range(first, first + count):
    p.append(balance_op(node, n))
p.flush()
print("acknowledged", flush=True)
sys.stdin.read()  # until killed
"""


def append_flush_and_kill(
    data_dir: Path, database_url: str | None, node: int, first: int, count: int
) -> None:
    """In a child process: opens ``data_dir``, appends ``count`` balances
    of ``node`` (acknowledged), flushes; then the child is killed with -9
    while it holds the data directory open."""
    child = subprocess.Popen(
        [sys.executable, "-c", _APPEND_AND_WAIT, str(data_dir), database_url or "",
         str(node), str(first), str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=Path(__file__).parent, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "acknowledged\n", (line, child.stderr and child.stderr.read())
    finally:
        child.kill()  # SIGKILL
        child.wait()
