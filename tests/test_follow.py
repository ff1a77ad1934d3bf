"""Follow mode: the Rust ``engine_writer`` example writes DATA_DIR/aof, a
:class:`Follower` (or ``openmatch-persistence follow``) keeps the database
current. The database must always hold a replay of the AOF's durable
prefix, whichever side is killed when."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.compaction import CompactionPolicy
from openmatch_persistence.follower import Follower
from openmatch_persistence.identity import read_identity
from openmatch_persistence.persistence import _bound_store
from openmatch_persistence.recovery import load_base

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def engine_writer() -> Path:
    """The example binary (debug: `cargo test` has built it already in CI)."""
    subprocess.run(
        ["cargo", "build", "-q", "-p", "openmatch-aof", "--example", "engine_writer"],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    return ROOT / "target" / "debug" / "examples" / "engine_writer"


def write(engine_writer: Path, data_dir: Path, *args: str) -> None:
    subprocess.run([str(engine_writer), str(data_dir), *args], check=True, timeout=60)


def start_writer(engine_writer: Path, data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(engine_writer), str(data_dir), *args], stderr=subprocess.DEVNULL)


def start_follow(data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "openmatch_persistence", "follow", str(data_dir), *args],
        stderr=subprocess.PIPE,
    )


def durable_end(aof_dir: Path) -> int:
    """Where the log's whole frames end (a torn tail left by a kill is not
    part of the prefix)."""
    report = _core.verify(aof_dir)
    assert not report.is_corrupt, report.message
    return report.position


def replayed_digest(aof_dir: Path, through: int) -> str:
    """The digest of the log's operations up to position ``through``."""
    state = _core.State(track_changes=False)
    items: list[tuple[_core.Operation, int]] = []
    for end, op in _core.scan(aof_dir):
        if end > through:
            break
        items.append((op, end))
    state.apply_many(items)
    assert state.position == through
    return state.digest()


def database_state(data_dir: Path, database: str | None) -> tuple[int, str]:
    """The position and digest of the state the database holds."""
    identity = read_identity(data_dir)
    assert identity is not None
    store = _bound_store(
        data_dir, identity, database_url=database, schema=None, max_connections=1, adopt=False
    )
    try:
        checkpoint = store.checkpoint()
        assert checkpoint is not None
        base = load_base(data_dir / "aof", store, False, identity.id)
        assert base.position == checkpoint.position
        return checkpoint.position, base.state.digest()
    finally:
        store.close()


def catch_up(follower: Follower, end: int) -> None:
    deadline = time.monotonic() + 30
    while follower.position < end:
        assert time.monotonic() < deadline, f"stuck at {follower.position} of {end}"
        follower.poll()
    follower.flush()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "engine"


def test_follows_a_finished_log_and_resumes_after_a_restart_with_nothing_twice(
    engine_writer: Path, data_dir: Path, database: str | None
) -> None:
    write(engine_writer, data_dir, "--ops", "3000", "--rate", "0", "--fsync", "no")
    aof = data_dir / "aof"
    first_end = durable_end(aof)
    with Follower(data_dir, database_url=database) as follower:
        catch_up(follower, first_end)
    assert database_state(data_dir, database) == (first_end, replayed_digest(aof, first_end))

    write(engine_writer, data_dir, "--ops", "2000", "--rate", "0", "--rotate-bytes", "100000")
    end = durable_end(aof)
    with Follower(data_dir, database_url=database) as follower:
        assert follower.position == first_end  # resumed from the checkpoint
        catch_up(follower, end)
        assert follower.stats().operations == 2000
    assert database_state(data_dir, database) == (end, replayed_digest(aof, end))


def test_a_torn_tail_at_the_live_end_is_waited_for(engine_writer: Path, data_dir: Path) -> None:
    write(engine_writer, data_dir, "--ops", "500", "--rate", "0")
    aof = data_dir / "aof"
    (start, segment, _) = _core.list_segments(aof)[-1]
    data = Path(segment).read_bytes()
    ends = [end - start for end, _ in _core.scan(segment)]
    cut = ends[-2] + 5  # the last frame is being appended: 5 of its bytes are there
    Path(segment).write_bytes(data[:cut])
    with Follower(data_dir) as follower:
        for _ in range(3):
            follower.poll()
        assert follower.position == start + ends[-2]
        with open(segment, "ab") as f:
            f.write(data[cut:])
        follower.poll()
        assert follower.position == start + ends[-1]


def written_segment(engine_writer: Path, data_dir: Path) -> tuple[int, str, list[int], bytearray]:
    """500 operations written by the engine: the last segment's start, path,
    frame ends (offsets in it) and bytes, to damage."""
    write(engine_writer, data_dir, "--ops", "500", "--rate", "0")
    (start, segment, _) = _core.list_segments(data_dir / "aof")[-1]
    ends = [end - start for end, _ in _core.scan(segment)]
    return start, segment, ends, bytearray(Path(segment).read_bytes())


def test_corruption_before_the_end_stops_with_segment_and_offset_nothing_flushed_past_it(
    engine_writer: Path, data_dir: Path
) -> None:
    start, segment, ends, data = written_segment(engine_writer, data_dir)
    data[ends[100] + 12] ^= 0xFF
    Path(segment).write_bytes(bytes(data))
    with Follower(data_dir) as follower:
        with pytest.raises(om.CorruptFrameError) as e:
            for _ in range(3):
                follower.poll()
        assert Path(segment).name in str(e.value) and f"offset {ends[100]}" in str(e.value)
        assert follower.position == start + ends[100]
        assert follower.flush() == start + ends[100]
    assert Path(segment).read_bytes() == bytes(data)  # never repaired by the follower


def test_a_length_past_the_limit_stops_as_oversized_not_corruption_nothing_flushed_past_it(
    engine_writer: Path, data_dir: Path
) -> None:
    start, segment, ends, data = written_segment(engine_writer, data_dir)
    data[ends[100] : ends[100] + 4] = (0xFFFFFFF0).to_bytes(4, "little")
    Path(segment).write_bytes(bytes(data))
    with Follower(data_dir) as follower:
        with pytest.raises(om.OversizedFrameError) as e:
            for _ in range(3):
                follower.poll()
        assert not isinstance(e.value, om.CorruptFrameError)
        message = str(e.value)
        assert Path(segment).name in message and f"offset {ends[100]}" in message
        assert f"oversized (limit {om.DEFAULT_MAX_PAYLOAD_LEN})" in message
        assert "corrupt" not in message
        assert follower.position == start + ends[100]
        assert follower.flush() == start + ends[100]
    assert Path(segment).read_bytes() == bytes(data)  # never cut by the follower


def test_the_followers_frame_limit_is_the_one_it_was_given(
    engine_writer: Path, data_dir: Path
) -> None:
    # Frames longer than a follower's limit stop it as oversized at the
    # first of them; the same log follows whole with a limit that fits.
    start, _, ends, data = written_segment(engine_writer, data_dir)
    limit = 16
    starts = [0, *ends[:-1]]
    first_long = next(b for b, e in zip(starts, ends, strict=True) if e - b - 8 > limit)
    with Follower(data_dir, max_payload=limit) as follower:
        with pytest.raises(om.OversizedFrameError, match=rf"oversized \(limit {limit}\)"):
            for _ in range(3):
                follower.poll()
        assert follower.position == start + first_long
    with Follower(data_dir) as follower:
        catch_up(follower, start + len(data))


def test_compaction_deletes_only_closed_covered_segments_then_resumes_from_the_image(
    engine_writer: Path, data_dir: Path
) -> None:
    write(engine_writer, data_dir, "--ops", "3000", "--rate", "0", "--rotate-bytes", "50000")
    aof = data_dir / "aof"
    segments = _core.list_segments(aof)
    assert len(segments) > 3
    end = durable_end(aof)
    digest = replayed_digest(aof, end)
    policy = CompactionPolicy(max_bytes=1, max_age=None)
    with Follower(data_dir, compaction=policy) as follower:
        catch_up(follower, end)
        deleted, _ = follower.compact()
        assert follower.state_digest() == digest
    left = _core.list_segments(aof)
    assert deleted == len(segments) - 1 and left == segments[-1:]  # never the live one
    with Follower(data_dir) as follower:
        assert follower.position == end
        assert follower.state_digest() == digest
        # The writer goes on after the compaction; the follower with it.
        write(engine_writer, data_dir, "--ops", "300", "--rate", "0")
        catch_up(follower, durable_end(aof))


def test_flushes_cover_only_bytes_it_made_durable(
    engine_writer: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(engine_writer, data_dir, "--ops", "800", "--rate", "0", "--rotate-bytes", "40000")
    synced: list[int] = []  # the starts of the segments fdatasynced
    real = _core.sync_segments

    def sync_segments(dir: Any, start: int, end: int) -> list[int]:
        done = real(dir, start, end)
        synced.extend(done)
        return done

    monkeypatch.setattr(_core, "sync_segments", sync_segments)
    aof = data_dir / "aof"
    with Follower(data_dir) as follower:
        catch_up(follower, durable_end(aof))
    holding_bytes = [start for start, _, n in _core.list_segments(aof) if n]
    assert len(holding_bytes) > 2 and sorted(set(synced)) == holding_bytes
    synced.clear()
    write(engine_writer, data_dir, "--ops", "100", "--rate", "0")
    with Follower(data_dir, writer_fsync="always") as follower:
        catch_up(follower, durable_end(aof))
    assert synced == []  # the writer's policy made every byte durable already


def test_kill_9_either_side_at_random_points(
    engine_writer: Path, data_dir: Path, database: str | None, request: pytest.FixtureRequest
) -> None:
    """20 rounds: the engine writes at 4,000 ops/s
    while `follow` runs; one side, then the other, is killed (-9, or the
    follower also by SIGTERM) at random moments, and both restart the next
    round over what the last left (the follower is killed only once it has
    flushed past the last round). The database must equal a replay of the
    log's durable prefix at its checkpoint, and then at the end. PostgreSQL
    in the default run, SQLite too with --soak."""
    if database is None and not request.config.getoption("--soak"):
        pytest.skip("the SQLite variant runs with --soak")
    rng = random.Random(1600)
    checkpoints: list[int] = []
    url = [] if database is None else ["--database-url", database]
    aof = data_dir / "aof"
    for _ in range(20):
        writer = start_writer(
            engine_writer,
            data_dir,
            "--rate",
            "4000",
            "--rotate-bytes",
            "60000",
            "--fsync",
            rng.choice(["always", "everysec", "no"]),
        )
        time.sleep(0.05)
        follow = start_follow(data_dir, "--poll-interval", "0.005", "--compact-bytes", "0", *url)
        procs = [writer, follow]
        rng.shuffle(procs)
        for proc in procs:
            if proc is follow:
                _wait_for_checkpoint_past(data_dir, database, max(checkpoints, default=0), follow)
            time.sleep(rng.uniform(0.03, 0.4))
            if proc is follow and rng.random() < 0.3:
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=30)
                assert proc.returncode in (143, -signal.SIGTERM), err.decode()
            else:
                proc.kill()
                _, err = proc.communicate(timeout=30)
                # Still following when killed: a follower that had stopped
                # on its own (an error at its start, say) would otherwise
                # pass unseen.
                assert proc is writer or proc.returncode == -signal.SIGKILL, err.decode()
        if read_identity(data_dir) is not None and _has_checkpoint(data_dir, database):
            at, digest = database_state(data_dir, database)
            assert digest == replayed_digest(aof, at)
            checkpoints.append(at)
    assert len(set(checkpoints)) > 5, checkpoints  # the follower did follow, round after round
    end = durable_end(aof)
    with Follower(data_dir, database_url=database) as follower:
        catch_up(follower, end)
    assert database_state(data_dir, database) == (end, replayed_digest(aof, end))


def _has_checkpoint(data_dir: Path, database: str | None) -> bool:
    return _checkpoint_position(data_dir, database) is not None


def _checkpoint_position(data_dir: Path, database: str | None) -> int | None:
    identity = read_identity(data_dir)
    if identity is None:
        return None
    store = _bound_store(
        data_dir, identity, database_url=database, schema=None, max_connections=1, adopt=False
    )
    try:
        checkpoint = store.checkpoint()
        return None if checkpoint is None else checkpoint.position
    finally:
        store.close()


def _wait_for_checkpoint_past(
    data_dir: Path, database: str | None, past: int, follow: subprocess.Popen[bytes]
) -> None:
    """Until the follower has flushed past ``past`` (so that a kill that
    comes next lands while it follows, not while it is still starting on a
    loaded machine), it exits, or 15 s pass; a round whose writer wrote
    nothing new then goes on without it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and follow.poll() is None:
        with contextlib.suppress(Exception):  # the store may not exist yet
            position = _checkpoint_position(data_dir, database)
            if position is not None and position > past:
                return
        time.sleep(0.05)


def test_follow_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "openmatch_persistence", "follow", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no aof/ to follow" in result.stderr
