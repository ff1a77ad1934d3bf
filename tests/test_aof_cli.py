"""``openmatch-persistence aof ...`` in-process (``main([...])``) and as a
subprocess: exit codes, output that is exactly JSON lines, repair."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from faultkit import run_cli
from test_scanner import frame_ends, sample_ops, seg_name

import openmatch_persistence as om
from openmatch_persistence.cli import main
from openmatch_persistence.progress import Progress


@pytest.fixture
def clean_file(tmp_path: Path) -> Path:
    f = tmp_path / seg_name(0)
    f.write_bytes(om.encode_many(sample_ops()))
    return f


@pytest.fixture
def torn_file(tmp_path: Path) -> Path:
    f = tmp_path / "torn.aof"
    f.write_bytes(om.encode_many(sample_ops())[:-3])
    return f


@pytest.fixture
def corrupt_dir(tmp_path: Path) -> Path:
    ops = sample_ops()
    d = tmp_path / "aof"
    d.mkdir()
    data = bytearray(om.encode_many(ops))
    data[frame_ends(ops)[2] + 9] ^= 0xFF
    (d / seg_name(0)).write_bytes(bytes(data))
    return d


def test_verify_exit_codes_and_summary(
    clean_file: Path, torn_file: Path, corrupt_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["aof", "verify", str(clean_file)]) == 0
    out = capsys.readouterr().out
    assert "frames:   7" in out and "outcome:  clean" in out
    assert "EpochAdvanced" in out and "first 7, last 8" in out

    assert main(["aof", "verify", str(torn_file)]) == 1
    captured = capsys.readouterr()
    assert "TORN TAIL" in captured.out and "warning" in captured.err

    assert main(["aof", "verify", str(corrupt_dir)]) == 2
    captured = capsys.readouterr()
    assert "CORRUPT" in captured.out
    assert seg_name(0) in captured.err and "checksum mismatch" in captured.err


def test_verify_json(clean_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["aof", "verify", "--json", str(clean_file)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "clean" and report["frames"] == 7


def test_dump_is_exactly_json_lines(clean_file: Path) -> None:
    proc = run_cli("aof", "dump", str(clean_file))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert proc.stdout.endswith("\n")
    assert [om.from_json(line) for line in lines] == sample_ops()
    for line in lines:
        assert isinstance(json.loads(line), dict)
    assert json.loads(lines[0]) == {"EpochAdvanced": [7, "Collect"]}


def test_dump_from_and_limit(clean_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ends = frame_ends(sample_ops())
    assert main(["aof", "dump", "--from", str(ends[1]), "--limit", "2", str(clean_file)]) == 0
    captured = capsys.readouterr()
    assert [om.from_json(x) for x in captured.out.splitlines()] == sample_ops()[2:4]
    assert f"--from {ends[3]}" in captured.err


def test_dump_stops_at_corruption_after_the_good_ops(
    corrupt_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["aof", "dump", str(corrupt_dir)]) == 2
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3
    assert "error" in captured.err and "offset" in captured.err


def test_stats(corrupt_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["aof", "stats", str(corrupt_dir)]) == 2
    out = capsys.readouterr().out
    assert "segments:" in out and seg_name(0) in out and "average frame" in out


def test_repair_dry_run_then_yes(torn_file: Path) -> None:
    before = torn_file.read_bytes()
    proc = run_cli("aof", "repair", "--dry-run", str(torn_file))
    assert proc.returncode == 1, proc.stderr
    assert "dry run" in proc.stdout and "removes" in proc.stdout
    assert torn_file.read_bytes() == before

    proc = run_cli("aof", "repair", "--yes", str(torn_file))
    assert proc.returncode == 0, proc.stderr
    assert "repaired" in proc.stdout and "backup" in proc.stdout
    assert "1 damaged frame" in proc.stdout
    backups = [p for p in os.listdir(torn_file.parent) if p.endswith(".bak")]
    assert len(backups) == 1
    assert before == torn_file.read_bytes() + (torn_file.parent / backups[0]).read_bytes()
    assert run_cli("aof", "verify", str(torn_file)).returncode == 0


def test_repair_needs_yes_or_dry_run(torn_file: Path) -> None:
    proc = run_cli("aof", "repair", str(torn_file))
    assert proc.returncode == 2
    assert "--yes" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for command in ("verify", "dump", "stats", "repair --yes"):
        proc = run_cli("aof", *command.split(), str(missing))
        assert proc.returncode == 2, command
        assert str(missing) in proc.stderr, command
        assert "Traceback" not in proc.stderr, command
        assert proc.stdout == "", command


def test_bad_start_position_is_a_clear_error(clean_file: Path) -> None:
    proc = run_cli("aof", "dump", "--from", "999999", str(clean_file))
    assert proc.returncode == 2
    assert "cannot start at position 999999" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_encode_still_round_trips(clean_file: Path, tmp_path: Path) -> None:
    dump = run_cli("aof", "dump", str(clean_file))
    jsonl = tmp_path / "ops.jsonl"
    jsonl.write_text(dump.stdout)
    out = tmp_path / "again.aof"
    assert main(["aof", "encode", str(jsonl), str(out)]) == 0
    assert out.read_bytes() == clean_file.read_bytes()
    proc = run_cli("aof", "encode", str(tmp_path / "missing.jsonl"), str(tmp_path / "x.aof"))
    assert proc.returncode == 2 and "missing.jsonl" in proc.stderr
    assert "Traceback" not in proc.stderr


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_percent_rate_and_eta_only_on_a_terminal() -> None:
    term = FakeTerminal()
    bar = Progress(1 << 30, label="verify", stream=term, bytes_=True, every=0)
    bar.update(1 << 29)
    bar.close()
    drawn = term.getvalue()
    assert "verify" in drawn and "50%" in drawn and "<" in drawn  # elapsed<remaining
    assert "B/s" in drawn
    assert "\n" not in drawn  # redrawn in place, wiped at the end

    pipe = io.StringIO()
    bar = Progress(1 << 30, label="verify", stream=pipe)
    bar.update(1 << 29)
    bar.close()
    assert pipe.getvalue() == ""


def test_status_lists_the_backups_of_cut_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENMATCH_DATABASE_URL", raising=False)
    aof = tmp_path / "aof"
    with om.AofWriter(aof) as writer:
        writer.append_many(sample_ops())
    torn = om.encode(sample_ops()[0])[:-3]
    with (aof / seg_name(0)).open("ab") as f:
        f.write(torn)
    with om.AofWriter(aof) as writer:
        backup = writer.torn_tail_backup
    assert backup is not None
    assert main(["status", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backups"] == [{"path": backup, "bytes": len(torn)}]
    assert [s["start"] for s in info["segments"]] == [0]  # a backup is no segment
    assert main(["status", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "backups: 1 file(s)" in text and backup in text and f"{len(torn):>12,} bytes" in text
    (aof / Path(backup).name).unlink()
    assert main(["status", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backups"] == []


def test_dump_positions_and_kinds(clean_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ops, ends = sample_ops(), frame_ends(sample_ops())
    assert main(["aof", "dump", "--positions", str(clean_file)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["start"], x["end"]) for x in lines] == list(zip([0, *ends[:-1]], ends))
    assert [om.from_json(json.dumps(x["op"])) for x in lines] == ops
    kind = ops[1].kind
    assert main(["aof", "dump", "--kind", kind, str(clean_file)]) == 0
    shown = [om.from_json(x) for x in capsys.readouterr().out.splitlines()]
    assert shown == [op for op in ops if op.kind == kind]


def test_dump_from_inside_a_frame_names_the_nearest_boundaries(
    clean_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ends = frame_ends(sample_ops())
    assert main(["aof", "dump", "--from", str(ends[1] + 3), str(clean_file)]) == 2
    err = capsys.readouterr().err
    assert f"--from {ends[1] + 3:,} is not a frame boundary" in err
    assert f"{ends[1]:,} before it and {ends[2]:,} after it" in err
    assert main(["aof", "verify", "--from", str(ends[1] + 3), str(clean_file)]) == 2
    assert "not a frame boundary" in capsys.readouterr().err


def test_dump_follow_prints_what_another_process_appends(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    ops = sample_ops()
    aof = tmp_path / "aof"
    with om.AofWriter(aof) as writer:
        writer.append_many(ops[:2])
    proc = subprocess.Popen(
        [sys.executable, "-m", "openmatch_persistence", "aof", "dump", "--follow", str(aof)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = [om.from_json(proc.stdout.readline()) for _ in range(2)]
        with om.AofWriter(aof) as writer:
            writer.append_many(ops[2:])
        more = [om.from_json(proc.stdout.readline()) for _ in range(len(ops) - 2)]
        assert first + more == ops
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err


def _compacted_with_a_segment_back(data_dir: Path) -> tuple[Path, str]:
    """A data directory (SQLite) after a compaction whose first unlink came
    back in a crash and the second did not: segment 0 is there, the one
    after it is gone, the live one follows. Returns the AOF dir and the
    digest of the full log."""
    from faultkit import NO_COMPACTION

    from openmatch_persistence.persistence import Persistence
    from openmatch_persistence.workload import take

    with Persistence.open(data_dir, compaction=NO_COMPACTION) as p:
        aof = p.aof_dir
        p.append_many(take(100, seed=5))
        p._journal.rotate()
        first = (aof / seg_name(0)).read_bytes()
        p.append_many(take(200, seed=5)[100:])
        p.compact()
        p.append_many(take(250, seed=5)[200:])
        digest = p.digest()
    (aof / seg_name(0)).write_bytes(first)
    return aof, digest


def test_repair_of_a_compaction_gap_removes_the_covered_segments_not_the_live_log(
    tmp_path: Path,
) -> None:
    from openmatch_persistence.persistence import Persistence

    aof, digest = _compacted_with_a_segment_back(tmp_path)
    live = sorted(p.name for p in aof.glob("*.aof"))[1:]
    assert run_cli("aof", "verify", str(tmp_path)).returncode == 2  # the gap
    proc = run_cli("aof", "repair", "--yes", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in aof.glob("*.aof")) == live
    (backup,) = aof.glob("*.bak")
    assert backup.name.startswith(seg_name(0))
    with Persistence.open(tmp_path) as p:
        assert p.digest() == digest


def _damaged_below_the_checkpoint(data_dir: Path) -> tuple[Path, int, str]:
    """A data directory (SQLite, one segment) whose database holds the first
    100 operations, whose AOF holds 50 more (written, then a crash before
    their flush), and a bit flipped in the 10th frame: damage the database's
    snapshot covers. Returns the AOF dir, the checkpoint and the digest of
    the whole log."""
    import shutil

    from faultkit import NO_COMPACTION

    from openmatch_persistence.persistence import Persistence
    from openmatch_persistence.workload import take

    ops = take(150, seed=9)
    with Persistence.open(data_dir, compaction=NO_COMPACTION) as p:
        aof = p.aof_dir
        p.append_many(ops[:100])
        checkpoint = p.position
    (segment,) = aof.glob("*.aof")
    with open(segment, "ab") as f:
        f.write(b"".join(om.encode(op) for op in ops[100:]))
    whole = data_dir.with_name(data_dir.name + "-whole")
    shutil.copytree(data_dir, whole)
    with Persistence.open(whole) as p:
        digest = p.digest()
    data = bytearray(segment.read_bytes())
    data[frame_ends(ops)[8] + 9] ^= 1  # a payload byte of the 10th frame
    segment.write_bytes(bytes(data))
    return aof, checkpoint, digest


def test_repair_of_damage_the_snapshot_covers_starts_the_log_again_at_the_checkpoint(
    tmp_path: Path,
) -> None:
    # Cutting at the damage would end the log before the checkpoint, which
    # recovery refuses: the data directory would have no way back. The log
    # starts again at the checkpoint instead, and nothing is lost.
    from openmatch_persistence.persistence import Persistence

    data_dir = tmp_path / "data"
    aof, checkpoint, digest = _damaged_below_the_checkpoint(data_dir)
    (segment,) = aof.glob("*.aof")
    kept = segment.read_bytes()[checkpoint:]
    assert run_cli("aof", "verify", str(data_dir)).returncode == 2
    proc = run_cli("aof", "repair", "--dry-run", str(data_dir))
    assert f"below the database's checkpoint {checkpoint}" in proc.stdout, proc.stdout
    proc = run_cli("aof", "repair", "--yes", str(data_dir))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in sorted(aof.glob("*.aof"))] == [seg_name(checkpoint)]
    assert (aof / seg_name(checkpoint)).read_bytes() == kept
    (backup,) = aof.glob("*.bak")
    assert backup.name.startswith(segment.name)
    assert len(backup.read_bytes()) == checkpoint + len(kept)
    with Persistence.open(data_dir) as p:
        assert p.digest() == digest


def test_a_repair_that_restarts_the_log_ends_well_after_a_crash_before_its_unlink(
    tmp_path: Path,
) -> None:
    # The new segment is made before the old one goes: a crash in between
    # leaves the two overlapping, which the next repair ends.
    from openmatch_persistence import repair as rp
    from openmatch_persistence.persistence import Persistence

    aof, checkpoint, digest = _damaged_below_the_checkpoint(tmp_path / "data")
    (segment,) = aof.glob("*.aof")
    om._core.restart_segment_at(aof, 0, checkpoint)  # the crash: the old segment stays
    assert [p.name for p in sorted(aof.glob("*.aof"))] == [seg_name(0), seg_name(checkpoint)]
    result = rp.repair(aof, checkpoint=checkpoint)
    assert result.plan.restart_at is None  # the log already goes on at the checkpoint
    assert not segment.exists() and result.after.is_clean
    with Persistence.open(tmp_path / "data") as p:
        assert p.digest() == digest


def test_repair_beside_a_writer_is_one_error_line(tmp_path: Path) -> None:
    with om.AofWriter(tmp_path) as writer:
        writer.append_many(sample_ops())
        with (tmp_path / seg_name(0)).open("ab") as f:
            f.write(b"\x07\x00")
        proc = run_cli("aof", "repair", "--yes", str(tmp_path))
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "a writer has the AOF open" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.glob("*.bak"))


def test_a_frame_past_the_limit_is_oversized_with_the_limit_to_raise(
    clean_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    longest = max(len(om.encode(op)) - 8 for op in sample_ops())
    limit = str(longest - 1)
    for command in ("verify", "stats", "dump"):
        assert main(["aof", command, str(clean_file), "--max-payload", limit]) == 3, command
        captured = capsys.readouterr()
        assert f"oversized (limit {limit})" in captured.err and "--max-payload" in captured.err
        assert "corrupt" not in (captured.err + captured.out).lower(), command
        if command != "dump":
            assert "outcome:  OVERSIZED" in captured.out
    assert main(["aof", "verify", "--json", str(clean_file), "--max-payload", limit]) == 3
    out = json.loads(capsys.readouterr().out)
    assert (out["outcome"], out["cause"]) == ("oversized", "oversized_length")
    # Raised, the same log reads cleanly.
    for command in ("verify", "stats", "dump"):
        assert main(["aof", command, str(clean_file), "--max-payload", str(longest)]) == 0
        captured = capsys.readouterr()
        assert "oversized" not in captured.err
    assert main(["aof", "dump", str(clean_file), "--max-payload", str(longest)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(sample_ops())


def _length_damaged_upwards(tmp_path: Path) -> tuple[Path, bytes, int]:
    """A segment whose fourth frame's length field says 0xFFFFFFF0: the
    segment, its bytes, and where that frame starts."""
    ops = sample_ops()
    data = bytearray(om.encode_many(ops))
    at = frame_ends(ops)[3]
    data[at : at + 4] = (0xFFFFFFF0).to_bytes(4, "little")
    seg = tmp_path / seg_name(0)
    seg.write_bytes(bytes(data))
    return seg, bytes(data), at


@pytest.mark.parametrize("mode", ["--yes", "--dry-run"])
def test_repair_refuses_an_oversized_frame_and_cuts_nothing(tmp_path: Path, mode: str) -> None:
    seg, data, _ = _length_damaged_upwards(tmp_path)
    proc = run_cli("aof", "repair", mode, str(tmp_path))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "refusing to repair" in proc.stderr and "nothing was cut" in proc.stderr
    assert f"oversized (limit {om.DEFAULT_MAX_PAYLOAD_LEN})" in proc.stderr
    assert "--max-payload" in proc.stderr and "corrupt" not in proc.stderr
    assert seg.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [seg.name]


def test_repair_with_the_limit_raised_repairs_a_damaged_length(tmp_path: Path) -> None:
    # A length damaged upwards is oversized under the default limit; with
    # the limit raised past it, the scan sees frames inside the bytes it
    # claims (length_past_end) and the repair cuts there, with a backup.
    seg, data, at = _length_damaged_upwards(tmp_path)
    assert run_cli("aof", "repair", "--yes", str(tmp_path)).returncode == 3
    proc = run_cli("aof", "repair", "--yes", "--max-payload", "0xFFFFFFFF", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert seg.read_bytes() == data[:at]
    backups = list(tmp_path.glob("*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == data[at:]


def test_repair_with_the_limit_raised_leaves_a_real_long_frame_alone(tmp_path: Path) -> None:
    ops = sample_ops()
    data = om.encode_many(ops)
    seg = tmp_path / seg_name(0)
    seg.write_bytes(data)
    limit = min(b - a for a, b in zip([0, *frame_ends(ops)], frame_ends(ops), strict=False)) - 9
    assert (
        run_cli("aof", "repair", "--yes", "--max-payload", str(limit), str(tmp_path)).returncode
        == 3
    )
    proc = run_cli("aof", "repair", "--yes", str(tmp_path))
    assert proc.returncode == 0 and "nothing to repair" in proc.stdout, proc.stdout + proc.stderr
    assert seg.read_bytes() == data and list(tmp_path.iterdir()) == [seg]


def test_repair_api_refuses_an_oversized_frame(tmp_path: Path) -> None:
    from openmatch_persistence.repair import plan_repair, repair

    ops = sample_ops()
    data = bytearray(om.encode_many(ops))
    data[0:4] = (0xFFFFFFF0).to_bytes(4, "little")
    seg = tmp_path / seg_name(0)
    seg.write_bytes(bytes(data))
    for attempt in (plan_repair, repair):
        with pytest.raises(om.OversizedFrameError) as e:
            attempt(tmp_path)
        assert not isinstance(e.value, om.CorruptFrameError)
        assert (e.value.offset, e.value.path) == (0, str(seg))
    assert seg.read_bytes() == bytes(data)


def test_repair_refuses_a_checkpoint_past_the_aofs_end_and_changes_nothing(
    tmp_path: Path,
) -> None:
    # Damage below a checkpoint the log never reached: not this database's
    # AOF, or one that lost its tail. No restart can be made from there.
    from openmatch_persistence import repair as rp

    aof, _, _ = _damaged_below_the_checkpoint(tmp_path / "data")
    (segment,) = aof.glob("*.aof")
    before = segment.read_bytes()
    beyond = len(before) + 1
    with pytest.raises(om.AofError, match=f"checkpoint {beyond} is past the AOF's end"):
        rp.repair(aof, checkpoint=beyond)
    assert [p.name for p in aof.iterdir() if p.suffix != ".lock"] == [segment.name]
    assert segment.read_bytes() == before
