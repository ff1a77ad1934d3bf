"""Every crash state recovers (issue 18): the file-system operations of a
workload are recorded with strace, the crash states a pessimistic model
allows are built from them (tests/crashkit.py), put on disk one by one, and
recovered. For each: every append acknowledged (durable) before the crash
point is there, nothing that is not a written record is accepted, nothing
durable is deleted (what a repair removes is in a backup), and recovery
either succeeds or refuses naming what is wrong.

The default run takes a sample of crash points per workload; ``--soak``
runs every crash point with more random states. docs/fault-model.md has the
model and the counts, and the counts of the version before the fixes (the
``*_before_the_fixes`` tests, which apply each fix's inverse to the
recorded operations and count the states each finding breaks).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from crashkit import (
    STRACE,
    Op,
    Recording,
    crash_points,
    crash_states,
    one_fsync_after_all_removals,
    one_fsync_per_deletion_run,
    record,
    without_fsync_after_mkdir,
    without_new_file_sync,
)
from faultkit import NO_COMPACTION, replay_digest

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.cli import main as cli_main
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.repair import repair
from openmatch_persistence.workload import take

pytestmark = pytest.mark.skipif(
    STRACE is None and not os.environ.get("CI"), reason="strace is not installed"
)

#: Crash points sampled per workload in the default run, besides the one
#: after each name operation.
SAMPLED_POINTS = 60
#: Random mixes per crash point (default run, soak).
RANDOM_MIXES = (3, 12)
OPS = 60


@dataclass
class Tally:
    """Outcomes of the crash states of one run."""

    outcomes: Counter[str]
    violations: list[str]

    def add(self, outcome: str, how: str, point: int) -> None:
        self.outcomes[outcome.split(":")[0]] += 1
        if outcome.startswith("violation"):
            self.violations.append(f"crash after op {point} ({how}): {outcome}")

    @property
    def states(self) -> int:
        return sum(self.outcomes.values())


def run_states(
    recording: Recording,
    check: Callable[[list[str]], str],
    soak: bool,
    seed: int,
    points: Sequence[int] | None = None,
) -> Tally:
    """Puts each crash state of ``recording`` on disk at its root and runs
    ``check`` (given the marks made before the crash) on it."""
    every = crash_points(recording)
    if points is None and soak:
        points = every
    elif points is None:
        # Just after each name operation (where the directory fsyncs
        # matter), and a random sample of the rest.
        named = {i + 1 for i, op in enumerate(recording.ops) if op.is_name_op}
        rest = sorted(set(every) - named)
        sample = random.Random(seed).sample(rest, min(len(rest), SAMPLED_POINTS))
        points = sorted(named | set(sample))
    tally = Tally(Counter(), [])
    mixes = RANDOM_MIXES[1] if soak else RANDOM_MIXES[0]
    for state in crash_states(recording, points, random_subsets=mixes, seed=seed):
        state.tree(recording).materialise(recording.root)
        tally.add(check(recording.marks(state.crash_after)), state.how, state.crash_after)
    return tally


def _judged(outcome: str, report: _core.ScanReport, durable: int) -> str:
    """A log ``aof verify`` calls corrupt, which the repair then fixed
    without losing anything durable. Damage past every durable record, in
    the last segment, that recovery refused: the bytes of unacknowledged
    appends that a power loss left half-written (a sector-torn last frame,
    or a hole where an earlier write was lost and a later one was not),
    which the recovery rule cannot tell from bit rot. Anything else (a gap,
    or damage below a durable record) is a violation."""
    past_durable = report.position >= durable and report.cause not in (
        "segment_gap",
        "segment_overlap",
    )
    if outcome.startswith("refused") and past_durable:
        return f"refused(unacked tail): {report.cause}"
    return f"violation(verify): {outcome}, but aof verify reports {report.cause}"


def marked(marks: list[str], kind: str) -> list[int]:
    return [int(m.split()[-1]) for m in marks if m.split()[0] == kind]


# --- a data directory: create, appends, rotation, snapshot, compaction, close ---

DATA_DIR_WORKLOAD = f"""
import os, sys
from openmatch_persistence.compaction import CompactionPolicy
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.workload import take
ops = take({OPS}, seed=18)
marks = os.open("/dev/null", os.O_WRONLY)
p = Persistence.open(sys.argv[1], compaction=CompactionPolicy(None, None), flush_interval=3600)
def append(i):
    os.write(marks, f"ack {{i + 1}} {{p.append(ops[i])}}".encode())
for i in range(25):
    append(i)
p._journal.rotate()
for i in range(25, 45):
    append(i)
p.compact()
for i in range(45, {OPS}):
    append(i)
p.close()
"""


@pytest.fixture(scope="module")
def data_dir_recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    home = tmp_path_factory.mktemp("crash-data-dir")
    return record(DATA_DIR_WORKLOAD, [str(home / "data")], str(home / "data"), cwd=str(home))


def check_data_dir(
    root: Path, *, repair_knows_checkpoint: bool = True
) -> Callable[[list[str]], str]:
    """A data directory (SQLite): it recovers to a record's end at or past
    every acknowledged append, with the state the replay of the log up to
    there gives; and ``aof verify`` then finds nothing wrong (were it to,
    the repair an operator would run next must lose nothing)."""
    ops = take(OPS, seed=18)
    ends, position = {0: 0}, 0
    for n, op in enumerate(ops, start=1):
        position += len(om.encode(op))
        ends[position] = n
    digests: dict[int, str] = {}

    def recover(acked: int) -> str:
        try:
            with Persistence.open(root, compaction=NO_COMPACTION, flush_interval=3600) as p:
                position, digest = p.position, p.digest()
        except om.OpenMatchPersistenceError as e:
            return f"refused: {type(e).__name__}: {e}"
        if position not in ends:
            return f"violation(garbage): recovered to position {position}, not a record's end"
        n = ends[position]
        if position < acked:
            return f"violation(lost): recovered to {position}, acknowledged up to {acked}"
        if n not in digests:
            digests[n] = replay_digest(ops[:n])
        if digest != digests[n]:
            return f"violation(garbage): the state at {position} is not the replay of {n} ops"
        return "recovered"

    def check(marks: list[str]) -> str:
        acked = max(marked(marks, "ack"), default=0)
        outcome = recover(acked)
        aof = root / "aof"
        if outcome.startswith("violation") or not aof.is_dir():
            return outcome
        report = _core.verify(aof)
        if not report.is_corrupt:
            return outcome
        # What an operator runs next: the repair (which reads the
        # checkpoint from the data directory's SQLite file), then a reopen.
        try:
            if repair_knows_checkpoint:
                with contextlib.redirect_stdout(io.StringIO()):
                    with contextlib.redirect_stderr(io.StringIO()):
                        cli_main(["aof", "repair", "--yes", str(root)])
            else:
                repair(aof)
        except om.AofError as e:
            return f"violation(verify): {report.cause}; aof repair refuses: {e}"
        after = recover(acked)
        if after != "recovered":
            return f"violation(repair): aof verify: {report.cause}; after aof repair: {after}"
        return _judged(outcome, report, acked)

    return check


def test_every_crash_state_of_a_data_directory_recovers(
    data_dir_recording: Recording, request: pytest.FixtureRequest
) -> None:
    soak = bool(request.config.getoption("--soak"))
    root = Path(data_dir_recording.root)
    tally = run_states(data_dir_recording, check_data_dir(root), soak, seed=1)
    assert not tally.violations, "\n".join(tally.violations[:10])
    assert tally.outcomes["recovered"] > 0
    ops = len(data_dir_recording.ops)
    print(f"data directory: {ops} ops, {tally.states} states, {dict(tally.outcomes)}")


# --- the writer alone: each policy, rotation, compaction's unlinks, close ------

WRITER_WORKLOAD = f"""
import os, sys
import openmatch_persistence as om
from openmatch_persistence.workload import take
aof, policy = sys.argv[1], sys.argv[2]
ops = take({OPS}, seed=19)
marks = os.open("/dev/null", os.O_WRONLY)
def say(kind, value):
    os.write(marks, f"{{kind}} {{value}}".encode())
w = om.AofWriter(aof, fsync=policy)
for i in range(0, {OPS}, 3):
    position = w.append_many(ops[i : i + 3])
    say("ack", position)
    if i % 12 == 9:
        say("durable", w.wait_durable(position))
    if i % 15 == 12:
        say("durable", w.rotate())
say("covered", position)
w.delete_covered(position)
for op in ops[:6]:
    say("ack", w.append(op))
w.close()
say("durable", position)
say("closed", 0)
"""


def writer_expected() -> bytes:
    ops = take(OPS, seed=19)
    return b"".join(om.encode(op) for op in [*ops, *ops[:6]])


def record_writer(tmp_path_factory: pytest.TempPathFactory, policy: str) -> Recording:
    home = tmp_path_factory.mktemp(f"crash-writer-{policy}")
    aof = str(home / "aof")
    return record(WRITER_WORKLOAD, [aof, policy], aof, cwd=str(home))


@pytest.fixture(scope="module")
def writer_always(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return record_writer(tmp_path_factory, "always")


@pytest.fixture(scope="module", params=["always", "everysec", "no"])
def writer_recording(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    writer_always: Recording,
) -> tuple[str, Recording]:
    policy: str = request.param
    if policy == "always":
        return policy, writer_always
    return policy, record_writer(tmp_path_factory, policy)


def check_log(
    aof: Path,
    expected: bytes,
    *,
    durable_from_start: int = 0,
    policy: str = "always",
    repair_knows_checkpoint: bool = True,
) -> Callable[[list[str]], str]:
    """A writer's directory: ``aof verify`` finds no damage, and the log
    the writer opens is a contiguous run of the expected bytes, from at most
    the last covered position (nothing compaction still needed is gone) to
    at least every durable mark (every acknowledgement under ``always``)."""

    def check(marks: list[str]) -> str:
        durable = [durable_from_start, *marked(marks, "durable")]
        if policy == "always":
            durable += marked(marks, "ack")
        must_reach = max(durable)
        covered = max(marked(marks, "covered"), default=0)
        if not aof.is_dir():
            return "violation(lost): the AOF directory is gone" if must_reach else "recovered"
        report = _core.verify(aof)
        if not report.is_corrupt:
            return opened(must_reach, covered)
        checkpoint = covered if repair_knows_checkpoint else None
        try:
            repair(aof, checkpoint=checkpoint)
        except om.AofError as e:
            return f"violation(verify): {report.cause}; aof repair refuses: {e}"
        after = opened(must_reach, covered)
        if after != "recovered":
            return f"violation(repair): aof verify: {report.cause}; after aof repair: {after}"
        return _judged(f"refused: {report.message}", report, must_reach)

    def opened(must_reach: int, covered: int) -> str:
        try:
            with om.AofWriter(aof) as w:  # cuts a torn tail
                end = w.position
        except om.OpenMatchPersistenceError as e:
            return f"refused: {type(e).__name__}: {e}"
        segments = _core.list_segments(aof)
        start = segments[0][0] if segments else 0
        held = b"".join(Path(path).read_bytes() for _, path, _ in segments)
        if held != expected[start : start + len(held)] or start + len(held) != end:
            return f"violation(garbage): bytes {start}..{end} are not the records written there"
        if end < must_reach:
            return f"violation(lost): the log ends at {end}, durable up to {must_reach}"
        if start > covered:
            return f"violation(deleted): the log starts at {start}, only {covered} was covered"
        return "recovered"

    return check


def test_every_crash_state_of_the_writer_recovers(
    writer_recording: tuple[str, Recording], request: pytest.FixtureRequest
) -> None:
    policy, recording = writer_recording
    soak = bool(request.config.getoption("--soak"))
    check = check_log(Path(recording.root), writer_expected(), policy=policy)
    tally = run_states(recording, check, soak, seed=2)
    assert not tally.violations, "\n".join(tally.violations[:10])
    assert tally.outcomes["recovered"] > 0
    print(
        f"writer {policy}: {len(recording.ops)} ops, {tally.states} states, {dict(tally.outcomes)}"
    )


# --- opening a log with a torn tail (backup, cut), and repair ------------------

REOPEN_WORKLOAD = """
import os, sys
import openmatch_persistence as om
from openmatch_persistence.workload import take
marks = os.open("/dev/null", os.O_WRONLY)
with om.AofWriter(sys.argv[1]) as w:
    for op in take(15, seed=20)[10:]:
        os.write(marks, f"ack {w.append(op)}".encode())
"""

REPAIR_WORKLOAD = """
import sys
from openmatch_persistence.repair import repair
repair(sys.argv[1])
"""


def test_every_crash_state_of_a_torn_tail_cut_recovers(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    frames = [om.encode(op) for op in take(15, seed=20)]
    aof = tmp_path / "aof"
    aof.mkdir(mode=0o700)
    torn = frames[10][: len(frames[10]) // 2]
    (aof / _core.segment_file_name(0)).write_bytes(b"".join(frames[:10]) + torn)
    recording = record(REOPEN_WORKLOAD, [str(aof)], str(aof), cwd=str(tmp_path))
    assert any(op.path.endswith(".bak") for op in recording.ops if op.kind == "create")
    soak = bool(request.config.getoption("--soak"))
    check = check_log(aof, b"".join(frames), durable_from_start=sum(map(len, frames[:10])))
    tally = run_states(recording, check, soak, seed=3)
    assert not tally.violations, "\n".join(tally.violations[:10])
    print(f"torn tail: {len(recording.ops)} ops, {tally.states} states, {dict(tally.outcomes)}")


@pytest.fixture(scope="module")
def repair_recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return record_repair(tmp_path_factory, REPAIR_WORKLOAD)


def record_repair(tmp_path_factory: pytest.TempPathFactory, script: str) -> Recording:
    """A repair of three segments with a damaged frame in the first: it
    truncates the first and deletes the other two."""
    home = tmp_path_factory.mktemp("crash-repair")
    frames = [om.encode(op) for op in take(20, seed=21)]
    aof = home / "aof"
    aof.mkdir(mode=0o700)
    for first, last in [(0, 8), (8, 14), (14, 20)]:
        name = _core.segment_file_name(sum(map(len, frames[:first])))
        (aof / name).write_bytes(b"".join(frames[first:last]))
    first_segment = aof / _core.segment_file_name(0)
    damaged = bytearray(first_segment.read_bytes())
    damaged[sum(map(len, frames[:5])) + 9] ^= 0x40  # a payload byte of frame 6
    first_segment.write_bytes(bytes(damaged))
    return record(script, [str(aof)], str(aof), cwd=str(home))


def check_repair(recording: Recording) -> Callable[[list[str]], str]:
    """Every byte a repair removed is in a backup, and the log reads as
    before the repair (the same damage) or as after it (clean): a crash
    midway never leaves a gap, which would make it look damaged elsewhere."""
    original = recording.base.files()
    aof = Path(recording.root)
    recording.base.materialise(str(aof))
    damage = _core.verify(aof)

    def check(marks: list[str]) -> str:
        now = {str(p): p.read_bytes() for p in aof.iterdir()} if aof.is_dir() else {}
        for name, content in original.items():
            kept = now.get(name, b"")
            if content[: len(kept)] != kept:
                return f"violation(garbage): {name} holds bytes it did not hold"
            if len(kept) < len(content):
                what = "whole" if name not in now else f"from-{len(kept)}"
                backups = [
                    c
                    for n, c in now.items()
                    if n.startswith(name + ".") and n.endswith(f".{what}.bak")
                ]
                if content[len(kept) :] not in backups:
                    return f"violation(deleted): {name}'s bytes from {len(kept)} are in no backup"
        report = _core.verify(aof)
        if report.is_corrupt and (report.cause, report.position) != (damage.cause, damage.position):
            return (
                f"violation(verify): after a crash in the repair, aof verify reports {report.cause}"
            )
        return "recovered"

    return check


def test_every_crash_state_of_a_repair_keeps_every_byte(
    repair_recording: Recording, request: pytest.FixtureRequest
) -> None:
    soak = bool(request.config.getoption("--soak"))
    tally = run_states(repair_recording, check_repair(repair_recording), soak, seed=4)
    assert not tally.violations, "\n".join(tally.violations[:10])
    ops = len(repair_recording.ops)
    print(f"repair: {ops} ops, {tally.states} states, {dict(tally.outcomes)}")


# --- the version before the fixes ---------------------------------------------
#
# Each fix's inverse, applied to the recorded operations: the states of the
# old version of each step, from the same recording.

BEFORE_THE_FIXES: dict[str, Callable[[Sequence[Op]], tuple[Op, ...]]] = {
    "no fsync of a new directory's parent": without_fsync_after_mkdir,
    "one directory fsync after all of compaction's unlinks": one_fsync_per_deletion_run,
    "SQLite file created without fsyncs": lambda ops: without_new_file_sync(ops, ".sqlite3"),
}


def _points_after(recording: Recording, kind: str, suffix: str, count: int) -> list[int]:
    """The crash points just after the first ``count`` operations of this
    kind on a name with this suffix."""
    hits = [
        i + 1 for i, op in enumerate(recording.ops) if op.kind == kind and op.path.endswith(suffix)
    ]
    return hits[:count]


def _toggled(recording: Recording, name: str) -> Recording:
    return replace(recording, ops=BEFORE_THE_FIXES[name](recording.ops))


def test_the_suite_finds_what_the_fixes_fixed(
    data_dir_recording: Recording,
    writer_always: Recording,
    repair_recording: Recording,
) -> None:
    """The sampled run is not blind: on the operations of the version before
    the fixes, the crash states right after the steps each fix changed break
    the checks."""
    root = Path(data_dir_recording.root)
    lost_dir = _toggled(data_dir_recording, "no fsync of a new directory's parent")
    points = [i + 1 for i, op in enumerate(lost_dir.ops) if op.kind == "mark"][:2]
    tally = run_states(lost_dir, check_data_dir(root), False, seed=5, points=points)
    assert tally.outcomes["violation(lost)"] > 0, tally.outcomes

    unlinks = _toggled(writer_always, "one directory fsync after all of compaction's unlinks")
    points = _points_after(unlinks, "unlink", ".aof", 2)
    aof = Path(writer_always.root)
    tally = run_states(unlinks, check_log(aof, writer_expected()), False, seed=6, points=points)
    assert tally.outcomes["violation(verify)"] > 0, tally.outcomes
    old_repair = check_log(aof, writer_expected(), repair_knows_checkpoint=False)
    tally = run_states(unlinks, old_repair, False, seed=6, points=points)
    assert tally.outcomes["violation(repair)"] > 0, tally.outcomes

    old = replace(repair_recording, ops=one_fsync_after_all_removals(repair_recording.ops))
    tally = run_states(old, check_repair(old), False, seed=8, points=crash_points(old))
    assert tally.outcomes["violation(verify)"] > 0, tally.outcomes


@pytest.mark.soak
def test_count_the_crash_states_of_the_version_before_the_fixes(
    data_dir_recording: Recording,
    writer_always: Recording,
    repair_recording: Recording,
) -> None:
    """The table in docs/fault-model.md: every crash point, each fix undone
    alone (and the repair that did not know the checkpoint)."""
    root = Path(data_dir_recording.root)
    aof = Path(writer_always.root)
    mkdir, unlinks, sqlite = BEFORE_THE_FIXES
    data_dir, writer = check_data_dir(root), check_log(aof, writer_expected())
    old_data_dir = check_data_dir(root, repair_knows_checkpoint=False)
    old_writer = check_log(aof, writer_expected(), repair_knows_checkpoint=False)
    runs = [
        (mkdir, "data directory", data_dir_recording, data_dir),
        (mkdir, "writer (always)", writer_always, writer),
        (unlinks, "data directory", data_dir_recording, data_dir),
        (
            unlinks,
            "data directory, repair without the checkpoint",
            data_dir_recording,
            old_data_dir,
        ),
        (unlinks, "writer (always)", writer_always, writer),
        (unlinks, "writer (always), repair without the checkpoint", writer_always, old_writer),
        (sqlite, "data directory", data_dir_recording, data_dir),
    ]
    rows = []
    for name, label, recording, check in runs:
        tally = run_states(_toggled(recording, name), check, True, seed=7)
        rows.append(
            f"| {name}: {label} | {tally.states} | {dict(sorted(tally.outcomes.items()))} |"
        )
    old = replace(repair_recording, ops=one_fsync_after_all_removals(repair_recording.ops))
    for label, recording in [("repair", repair_recording), ("repair, old code", old)]:
        tally = run_states(recording, check_repair(recording), True, seed=7)
        rows.append(f"| {label} | {tally.states} | {dict(sorted(tally.outcomes.items()))} |")
    print("\n" + "\n".join(rows))
