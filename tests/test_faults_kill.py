"""kill -9 under load. A forked child opens the data directory through the
facade (so recovery is the real one), appends the workload from several
threads (``fsync="always"``, and the lazy policies) with the flusher
running, and sends each acknowledged position to the parent over a pipe;
the parent kills it at a random moment, recovers, and checks that

* every acknowledged operation is in the log, at its acknowledged position;
* every operation in the log was sent, each thread's in its send order, and
  each thread's operations form a prefix of its stream (at most one past
  its last reported acknowledgement: the append in flight, or one whose
  acknowledgement the kill cut off);
* the recovered state (snapshot + AOF) equals the replay of the whole log.

Some rounds put the kill at a chosen point instead, so that what the
suite claims to cover is covered every run, not by luck: a share stops
inside recovery (before the snapshot is loaded, before the AOF is opened
and replayed, after recovery) and is killed there; another share leaves a
torn frame at the end of the log before its kill (a kill -9 alone never
tears a frame: the kernel finishes a pwrite to a file), which the next
recovery must cut. The tally counts both, and the tests assert them.

Rounds are chained ten to a data directory, so recovery also runs over logs
that earlier kills tore and earlier recoveries cut. Children are forked
from a multiprocessing fork server that has already imported everything:
a round costs a fork, not an interpreter start.

The writer alone under kill -9 with each fsync policy is in
tests/test_writer.py; kills at each compaction step in
tests/test_persistence.py."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest
from faultkit import (
    ACK,
    MARK,
    NO_COMPACTION,
    RECOVERY_POINTS,
    fresh_schema,
    log_records,
    victim,
    victim_stream,
)

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.persistence import Persistence

THREADS = 4
CHAIN = 10  # rounds per data directory
EARLY = 0.1  # the share of kills at a chosen point of recovery (in turn)
TORN = 0.1  # the share of rounds whose victim leaves a torn frame before its kill
MAX_DELAY = 0.15  # seconds: the others land this long after the first ack at most


def check_round(
    data_dir: Path,
    database_url: str | None,
    round_: int,
    acks: list[tuple[int, int, int]],
    start: int,
    expected: _core.State,
    tally: Counter[str],
) -> int:
    """Recovers ``data_dir`` and checks the round's part of the log (from
    ``start``); applies it to ``expected``; returns the new end."""
    last_ack = [-1] * THREADS
    for thread, index, _ in acks:
        assert index == last_ack[thread] + 1, "acknowledgements come in send order"
        last_ack[thread] = index
    # A stream may repeat an operation (a self-trade moves a balance away
    # and back), so an encoding maps to every (thread, index) that sent it.
    sent: dict[bytes, list[tuple[int, int]]] = {}
    for thread in range(THREADS):
        stream = victim_stream(round_, thread)
        for index in range(last_ack[thread] + 2):
            sent.setdefault(om.encode(next(stream)), []).append((thread, index))

    with Persistence.open(data_dir, database_url=database_url, compaction=NO_COMPACTION) as p:
        tally["torn_tails_cut"] += p.recovery.torn_tail_cut > 0
        records = log_records(p.aof_dir, start=start)
        seen = [0] * THREADS
        at: dict[int, tuple[int, int]] = {}
        for position, op in records:
            senders = sent.get(om.encode(op))
            assert senders, f"round {round_}: position {position} holds an op never sent"
            # Each thread's operations in its send order, none skipped or repeated.
            next_of = [(t, i) for t, i in senders if i == seen[t]]
            assert next_of, f"round {round_}: {senders} at {position}, expected {seen}"
            who = thread, _ = next_of[0]
            seen[thread] += 1
            at[position] = who
            expected.apply(op, position)
        for thread, index, position in acks:
            assert at.get(position) == (thread, index), (
                f"round {round_}: acknowledged op {index} of thread {thread} at {position} was lost"
            )
        for thread in range(THREADS):
            # At most one past the last reported acknowledgement.
            assert last_ack[thread] + 1 <= seen[thread] <= last_ack[thread] + 2
            tally["unreported_in_log"] += seen[thread] - last_ack[thread] - 1
        assert p.position == (records[-1][0] if records else start)
        assert p.digest() == expected.digest(), f"round {round_}: recovered != replayed"
        tally["acknowledged"] += len(acks)
        tally["rounds_without_ack"] += not acks
        tally["from_snapshot"] += p.recovery.snapshot is not None
        return p.position


def kill_rounds(
    tmp_path: Path,
    database_url: str | None,
    rounds: int,
    seed: int,
    fsync: _core.FsyncPolicy = "always",
) -> Counter[str]:
    ctx = multiprocessing.get_context("forkserver")
    # What the children need, imported once in the server. (Python 3.11's
    # fork server ignores the parent's sys.path, so faultkit itself, in
    # tests/, is imported by each child: 5 ms. pytest because a child
    # re-runs the main script, which may be the pytest entry point.)
    ctx.set_forkserver_preload(
        ["openmatch_persistence.persistence", "openmatch_persistence.workload", "psycopg", "pytest"]
    )
    rng = random.Random(seed)
    tally: Counter[str] = Counter()
    started = time.monotonic()
    with ExitStack() as chains:
        for round_ in range(rounds):
            if round_ % CHAIN == 0:
                data_dir = tmp_path / f"chain{round_ // CHAIN}"
                url = None
                if database_url is not None:
                    url = chains.enter_context(fresh_schema(database_url, "test_faults_kill"))
                expected = _core.State()
                start = 0
            reader, writer = ctx.Pipe(duplex=False)
            draw = rng.random()
            plan = "run"
            if draw < EARLY:
                plan = RECOVERY_POINTS[tally["killed_in_recovery"] % len(RECOVERY_POINTS)]
            elif draw < EARLY + TORN:
                plan = "torn"
            child = ctx.Process(
                target=victim, args=(str(data_dir), url, round_, THREADS, fsync, writer, plan)
            )
            child.start()
            writer.close()
            acks = []
            try:
                if plan != "run":
                    # Killed where the victim stands and says so.
                    while True:
                        assert reader.poll(60), f"round {round_}: the victim never reached {plan}"
                        ack = ACK.unpack(reader.recv_bytes())
                        if ack[0] == MARK:
                            break
                        acks.append(ack)
                    tally["killed_in_recovery" if plan != "torn" else "torn_written"] += 1
                    tally[f"killed_at_{plan}"] += 1
                    deadline = time.monotonic()
                else:
                    assert reader.poll(60), f"round {round_}: no acknowledgement within 60 s"
                    acks.append(ACK.unpack(reader.recv_bytes()))
                    deadline = time.monotonic() + rng.uniform(0.0, MAX_DELAY)
            except EOFError:
                child.join()
                pytest.fail(f"round {round_}: the child died on its own ({child.exitcode})")
            while (left := deadline - time.monotonic()) > 0:
                if reader.poll(left):
                    acks.append(ACK.unpack(reader.recv_bytes()))
            child.kill()
            child.join()
            assert child.exitcode == -9, f"round {round_}: the child died on its own"
            while reader.poll(0):  # what it sent before it died
                try:
                    acks.append(ACK.unpack(reader.recv_bytes()))
                except EOFError:
                    break
            reader.close()
            cut_before = tally["torn_tails_cut"]
            start = check_round(data_dir, url, round_, acks, start, expected, tally)
            if plan == "torn":
                assert tally["torn_tails_cut"] == cut_before + 1, f"round {round_}: no tail cut"
    tally["rounds"] = rounds
    tally["seconds"] = round(time.monotonic() - started)
    store = "sqlite" if database_url is None else "postgres"
    print(f"\nkill -9 ({store}, {fsync}): {dict(tally)}")
    return tally


def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    tally = kill_rounds(tmp_path, None, rounds=100, seed=1)
    assert tally["acknowledged"] > 0
    # The rounds really reach what they are for: torn tails cut by
    # recovery, and kills inside recovery at each of its points.
    assert tally["torn_tails_cut"] >= tally["torn_written"] > 0
    assert all(tally[f"killed_at_{point}"] > 0 for point in RECOVERY_POINTS), tally


@pytest.mark.postgres
@pytest.mark.slow
def test_kill_9_with_the_flusher_on_postgres(tmp_path: Path, database_url: str) -> None:
    tally = kill_rounds(tmp_path, database_url, rounds=100, seed=2)
    assert tally["from_snapshot"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["everysec", "no"])
def test_kill_9_under_lazy_policies_loses_nothing_acknowledged(tmp_path: Path, fsync: str) -> None:
    # A process crash loses nothing acknowledged under any policy: the
    # kernel has every write. (A power loss is another matter: see
    # test_faults_io.py and docs/fault-model.md.)
    kill_rounds(tmp_path, None, rounds=20, seed=5, fsync=fsync)  # type: ignore[arg-type]


@pytest.mark.soak
@pytest.mark.parametrize(("fsync", "rounds"), [("always", 1000), ("everysec", 300), ("no", 300)])
def test_soak_kill_9_under_load(tmp_path: Path, fsync: str, rounds: int) -> None:
    kill_rounds(tmp_path, None, rounds=rounds, seed=3, fsync=fsync)  # type: ignore[arg-type]


@pytest.mark.soak
@pytest.mark.postgres
def test_soak_kill_9_with_the_flusher_on_postgres(tmp_path: Path, database_url: str) -> None:
    kill_rounds(tmp_path, database_url, rounds=1000, seed=4)
