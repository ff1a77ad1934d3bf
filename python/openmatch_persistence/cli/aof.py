"""``openmatch-persistence aof ...``: verify, dump, stats, repair, encode.

PATH is a segment file, an AOF directory, or a data directory (its
``aof/`` is used); a path that holds no segment is an error. Exit codes of ``verify``,
``stats`` and ``dump``: 0 clean, 1 torn tail only (the warning an
interrupted append leaves), 2 corruption or an error, 3 a frame longer than
the reader's limit (``oversized``: raise ``--max-payload``; ``repair``
refuses it, exit 3, and cuts nothing). ``verify`` also
replays a log that starts at position 0 with the journal's rule, and exits
2 for an operation that breaks the state's invariants (recovery would
refuse it). ``dump`` prints
nothing but JSON lines on stdout; everything else it says goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from openmatch_persistence import _core
from openmatch_persistence.cli.common import (
    EXIT_OVERSIZED,
    CliError,
    add_database_url_argument,
    add_json_argument,
    add_max_payload_argument,
)
from openmatch_persistence.errors import (
    AofError,
    JsonFormatError,
    LogViolationError,
    NotADataDirError,
)
from openmatch_persistence.fileio import write_file_atomically
from openmatch_persistence.identity import AOF_DIRNAME
from openmatch_persistence.progress import Progress
from openmatch_persistence.repair import describe, plan_repair, repair

EXIT_CLEAN = 0
EXIT_TORN_TAIL = 1
EXIT_CORRUPT = 2

#: Inputs smaller than this finish before a progress bar would help.
PROGRESS_MIN_BYTES = 64 * 1024 * 1024

#: Seconds ``dump --follow`` waits before it looks for new frames again.
FOLLOW_INTERVAL = 0.2


def register(subparsers: Any) -> None:
    aof = subparsers.add_parser("aof", help="inspect, check, repair and convert AOF files")
    commands = aof.add_subparsers(dest="aof_command", metavar="AOF_COMMAND", required=True)
    path_help = "a segment file, an AOF directory, or a data directory (its aof/)"

    verify = commands.add_parser(
        "verify",
        help="check every frame; exit 0 clean, 1 torn tail only, 2 corruption, "
        "3 a frame over --max-payload",
    )
    verify.add_argument("path", help=path_help)
    verify.add_argument(
        "--from", dest="start", type=_position, metavar="POSITION", help="start at this position"
    )
    verify.add_argument(
        "--frames-only",
        action="store_true",
        help="check lengths and checksums without decoding payloads (faster; no epochs)",
    )
    add_max_payload_argument(verify)
    add_json_argument(verify)
    verify.set_defaults(handler=cmd_verify)

    dump = commands.add_parser(
        "dump",
        help="print each operation as one JSON line (aof-format.md section 4)",
        description="Print each operation as one JSON line on stdout, as pg_waldump prints "
        "WAL records: from a position, of some kinds only, with each frame's position, and "
        "on as another process appends (--follow).",
    )
    dump.add_argument("path", help=path_help)
    dump.add_argument(
        "--from",
        dest="start",
        type=_position,
        metavar="POSITION",
        help="start at this position, a frame boundary (an error names the nearest ones)",
    )
    dump.add_argument("--limit", type=_count, metavar="N", help="print at most N operations")
    dump.add_argument(
        "--kind",
        action="append",
        choices=_core.OPERATION_KINDS,
        metavar="KIND",
        help="print only operations of this kind (repeat for several): "
        + ", ".join(_core.OPERATION_KINDS),
    )
    dump.add_argument(
        "--positions",
        action="store_true",
        help='print {"start": S, "end": E, "op": OPERATION} per frame: where each frame '
        "starts and ends in the log",
    )
    dump.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="at the end of the log, wait for more (as another process appends) until "
        "interrupted; a torn tail is then an append in progress, not a warning",
    )
    add_max_payload_argument(dump)
    dump.set_defaults(handler=cmd_dump)

    stats = commands.add_parser("stats", help="segments, frames and operations per kind")
    stats.add_argument("path", help=path_help)
    add_max_payload_argument(stats)
    add_json_argument(stats)
    stats.set_defaults(handler=cmd_stats)

    rep = commands.add_parser(
        "repair",
        help="cut the AOF at its first bad frame, after backing up what is cut",
    )
    rep.add_argument("path", help=path_help)
    mode = rep.add_mutually_exclusive_group(required=True)
    mode.add_argument("--yes", action="store_true", help="really cut (backups are kept)")
    mode.add_argument("--dry-run", action="store_true", help="only say what would be cut")
    add_database_url_argument(
        rep,
        default_help="a data directory's own SQLite file; the checkpoint is read from it "
        "so that no segment a snapshot does not cover is deleted",
    )
    add_max_payload_argument(rep)
    add_json_argument(rep)
    rep.set_defaults(handler=cmd_repair)

    encode = commands.add_parser("encode", help="write an AOF file from JSON lines")
    encode.add_argument("jsonl", help="a file of JSON lines, one operation each ('-' for stdin)")
    encode.add_argument("out", help="the AOF file to write (must not exist)")
    encode.set_defaults(handler=cmd_encode)


def _position(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a position: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a position is never negative: {text}")
    return value


def _count(text: str) -> int:
    return _position(text)


# --- progress -----------------------------------------------------------------


def _progress(path: Path, label: str) -> Progress:
    total = _input_size(path)
    return Progress(
        total,
        label=label,
        bytes_=True,
        enabled=total >= PROGRESS_MIN_BYTES and sys.stderr.isatty(),
    )


def _input_size(path: Path) -> int:
    """Bytes a scan of ``path`` reads (for the progress bar only)."""
    try:
        if path.is_dir():
            entries = os.scandir(path)
            return sum(e.stat().st_size for e in entries if e.name.endswith(".aof") and e.is_file())
        return path.stat().st_size
    except OSError:
        return 0


# --- reports ------------------------------------------------------------------


def _exit_code(report: _core.ScanReport) -> int:
    if report.is_clean:
        return EXIT_CLEAN
    if report.is_torn_tail:
        return EXIT_TORN_TAIL
    if report.is_oversized:
        return EXIT_OVERSIZED
    return EXIT_CORRUPT


def _say_outcome(report: _core.ScanReport) -> None:
    """The warning or error for a stop that is not clean, on stderr."""
    if report.is_torn_tail:
        print(
            f"openmatch-persistence: warning: {report.message} "
            f"(an interrupted append; `aof repair` can cut it)",
            file=sys.stderr,
        )
    elif report.is_corrupt or report.is_oversized:
        print(
            f"openmatch-persistence: error: {report.message}; the data after it was not read",
            file=sys.stderr,
        )


def _summary(report: _core.ScanReport, out: TextIO) -> None:
    segments = f" ({report.segments} segment{'s' if report.segments != 1 else ''})"
    out.write(f"path:     {report.path}{segments}\n")
    out.write(f"frames:   {report.frames:,}\n")
    out.write(f"bytes:    {report.bytes:,} (positions {report.start}..{report.position})\n")
    for kind, n in report.counts.items():
        if n:
            out.write(f"  {kind:<16}{n:>14,}\n")
    first = "-" if report.first_epoch is None else str(report.first_epoch)
    last = "-" if report.last_epoch is None else str(report.last_epoch)
    out.write(f"epochs:   first {first}, last {last}\n")
    label = {
        "clean": "clean",
        "torn_tail": "TORN TAIL (warning)",
        "oversized": "OVERSIZED",
        "corrupt": "CORRUPT",
    }
    out.write(f"outcome:  {label[report.outcome]}")
    if not report.is_clean:
        out.write(f": {report.message}")
    out.write("\n")


def _verify(
    path: Path, start: int | None, decode: bool, label: str, max_payload: int
) -> _core.ScanReport:
    progress = _progress(path, label)
    try:
        # The callback runs between steps of the scan even with no bar to
        # draw: that is where a SIGINT or SIGTERM gets through to stop it.
        report = _core.verify(
            path, start=start, decode=decode, progress=progress.update, max_payload=max_payload
        )
    finally:
        progress.close()
    _check_start(path, start, report, max_payload)
    return report


# --- commands -----------------------------------------------------------------


def _resolve(text: str) -> Path:
    """The segment file or AOF directory that PATH names: a data directory
    stands for its ``aof/``. A path with no segment is an error, never an
    empty, "clean" log."""
    path = Path(text)
    if not path.exists():
        raise NotADataDirError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / AOF_DIRNAME).is_dir():
            path = path / AOF_DIRNAME
        if not _core.list_segments(path):
            raise NotADataDirError(
                f"{path}: no AOF segment in it (give a data directory, its {AOF_DIRNAME}/, "
                "or a segment file)"
            )
    return path


def _invariants(
    path: Path, report: _core.ScanReport, max_payload: int
) -> tuple[str, LogViolationError | None]:
    """Replays what the scan accepted (with its frame bound) with the
    journal's rule: ``ok``, the first operation that breaks an invariant, or
    why it was not checked."""
    if report.start != 0:
        return (
            f"not checked: the log starts at position {report.start}, after a snapshot "
            "(`recover` checks it against the database's)",
            None,
        )
    try:
        _core.replay(_core.State(track_changes=False), path, max_payload=max_payload)
    except LogViolationError as e:
        return "violated", e
    return "ok", None


def cmd_verify(args: argparse.Namespace) -> int:
    path = _resolve(args.path)
    report = _verify(path, args.start, not args.frames_only, "verify", args.max_payload)
    if args.frames_only or args.start is not None:
        invariants, violation = "not checked (--frames-only or --from)", None
    else:
        invariants, violation = _invariants(path, report, args.max_payload)
    if args.json:
        out = report.to_dict()
        out["invariants"] = invariants
        if violation is not None:
            out["violation"] = {
                "position": violation.position,
                "kind": violation.kind,
                "entity": violation.entity,
                "message": str(violation),
            }
        print(json.dumps(out))
    else:
        _summary(report, sys.stdout)
        sys.stdout.write(f"invariants: {invariants}\n")
        sys.stdout.flush()
    _say_outcome(report)
    if violation is not None:
        print(f"openmatch-persistence: error: {violation}", file=sys.stderr)
        return EXIT_CORRUPT
    return _exit_code(report)


def cmd_stats(args: argparse.Namespace) -> int:
    path = _resolve(args.path)
    report = _verify(path, None, True, "stats", args.max_payload)
    if args.json:
        print(json.dumps(report.to_dict()))
        _say_outcome(report)
        return _exit_code(report)
    out = sys.stdout
    _summary(report, out)
    if report.frames:
        out.write(f"average frame: {report.bytes / report.frames:,.1f} bytes\n")
        for kind, n in report.counts.items():
            if n:
                out.write(f"  {kind:<16}{n / report.frames:>8.1%}\n")
    if path.is_dir():
        out.write("segments:\n")
        for name in sorted(os.listdir(path)):
            if name.endswith(".aof") and len(name) == 24 and name[:20].isdigit():
                size = (path / name).stat().st_size
                start = int(name[:20])
                out.write(f"  {name}  start {start:>14,}  end {start + size:>14,}  {size:>14,} B\n")
    out.flush()
    _say_outcome(report)
    return _exit_code(report)


def _boundaries(path: Path, position: int, max_payload: int) -> tuple[int | None, int | None]:
    """The frame boundaries nearest to ``position``: the last at or before
    it and the first after it (None where there is none). Scans the segment
    that holds ``position`` from its start."""
    segments = _core.list_segments(path) if path.is_dir() else []
    starts = [s for s, _, _ in segments if s <= position]
    scanner = _core.scan(path, start=starts[-1] if starts else None, max_payload=max_payload)
    before = starts[-1] if starts else 0
    while True:
        batch = scanner.read_batch(4096)
        if not batch:
            return before, None
        for end, _ in batch:
            if end > position:
                return before, end
            before = end


def _check_start(path: Path, start: int | None, report: _core.ScanReport, max_payload: int) -> None:
    """A scan that stopped at once at ``--from``: say whether that position
    is no frame boundary, naming the nearest, instead of a "corrupt frame"."""
    if not start or report.is_clean or report.frames or report.position != start:
        return
    before, after = _boundaries(path, start, max_payload)
    if before == start:
        return  # a real boundary; the damage is real too
    after_text = f"{after:,}" if after is not None else "none (the log ends before it)"
    raise CliError(
        f"--from {start:,} is not a frame boundary: the nearest are {before:,} before it "
        f"and {after_text} after it"
    )


def _frame_line(start: int, end: int, op: _core.Operation, positions: bool) -> str:
    text = _core.to_json(op)
    if positions:
        return f'{{"start":{start},"end":{end},"op":{text}}}\n'
    return text + "\n"


def cmd_dump(args: argparse.Namespace) -> int:
    path = _resolve(args.path)
    limit: int | None = args.limit
    kinds = frozenset(args.kind) if args.kind else None
    out = sys.stdout
    progress = _progress(path, "dump")
    printed = 0
    position: int | None = args.start  # where the next frame starts, once known
    scanner = _core.scan(path, start=position, max_payload=args.max_payload)
    report = None
    try:
        while True:
            while limit is None or printed < limit:
                batch = scanner.read_batch(4096)
                if not batch:
                    break
                if position is None:
                    # The log's first position: its first frame's end less
                    # its length (encoding a decoded frame gives its bytes).
                    position = batch[0][0] - len(_core.encode(batch[0][1]))
                lines: list[str] = []
                for end, op in batch:
                    if limit is not None and printed + len(lines) >= limit:
                        break
                    if kinds is None or op.kind in kinds:
                        lines.append(_frame_line(position, end, op, args.positions))
                    position = end
                out.write("".join(lines))
                printed += len(lines)
                progress.update(scanner.position)
            report = None if limit is not None and printed >= limit else scanner.result
            if not args.follow or report is None or report.is_corrupt or report.is_oversized:
                break
            # The end of the log for now, or an append under way (a torn
            # tail): look again from the last whole frame.
            out.flush()
            time.sleep(FOLLOW_INTERVAL)
            scanner = _core.scan(path, start=position, max_payload=args.max_payload)
    finally:
        progress.close()
    out.flush()
    if report is None:
        # Stopped by --limit: say where to go on from.
        print(
            f"openmatch-persistence: {printed} operations; next position {position} "
            f"(--from {position} to continue)",
            file=sys.stderr,
        )
        return EXIT_CLEAN
    _check_start(path, args.start, report, args.max_payload)
    _say_outcome(report)
    return _exit_code(report)


def _checkpoint(data_dir: Path, database_url: str | None) -> int | None:
    """The snapshot position of the database behind ``data_dir``: the one
    ``--database-url`` names, else a data directory's SQLite file, if any."""
    from openmatch_persistence.persistence import SQLITE_FILENAME
    from openmatch_persistence.store import open_store

    sqlite = data_dir / SQLITE_FILENAME
    if database_url is None and not sqlite.is_file():
        return None
    with open_store(database_url, sqlite_path=str(sqlite)) as store:
        checkpoint = store.checkpoint()
    return None if checkpoint is None else checkpoint.position


def cmd_repair(args: argparse.Namespace) -> int:
    path = _resolve(args.path)
    checkpoint = _checkpoint(Path(args.path), args.database_url)
    plan = plan_repair(path, checkpoint=checkpoint, max_payload=args.max_payload)
    if args.json:
        return _repair_json(path, plan, args.dry_run, checkpoint, args.max_payload)
    if not plan.needed:
        print(f"{path}: {describe(plan)[0]}")
        return EXIT_CLEAN
    if args.dry_run:
        print(f"{path}: dry run, nothing changed; a repair would:")
        for line in describe(plan):
            print(f"  {line}")
        return _exit_code(plan.report)
    result = repair(path, plan=plan, checkpoint=checkpoint, max_payload=args.max_payload)
    print(f"{path}: repaired")
    for line in describe(result.plan, result.removed):
        print(f"  {line}")
    print(f"  now: {result.after.message}")
    return EXIT_CLEAN if result.after.is_clean else _exit_code(result.after)


def _repair_json(
    path: Path, plan: Any, dry_run: bool, checkpoint: int | None, max_payload: int
) -> int:
    out: dict[str, Any] = {
        "path": str(path),
        "needed": plan.needed,
        "dry_run": dry_run,
        "plan": describe(plan),
    }
    code = EXIT_CLEAN
    if plan.needed and dry_run:
        code = _exit_code(plan.report)
    elif plan.needed:
        result = repair(path, plan=plan, checkpoint=checkpoint, max_payload=max_payload)
        out["done"] = describe(result.plan, result.removed)
        out["after"] = result.after.to_dict()
        code = EXIT_CLEAN if result.after.is_clean else _exit_code(result.after)
    print(json.dumps(out, sort_keys=True))
    return code


def cmd_encode(args: argparse.Namespace) -> int:
    out_dir = Path(args.out).parent
    if not out_dir.is_dir():
        # Checked first: a bad OUT is found before any input is read.
        raise AofError(f"{args.out}: the directory {out_dir} does not exist")
    if args.jsonl == "-":
        data = sys.stdin.buffer.read()
        source = "<stdin>"
    else:
        try:
            with open(args.jsonl, "rb") as f:
                data = f.read()
        except OSError as e:
            raise AofError(f"{args.jsonl}: {e.strerror}") from None
        source = args.jsonl
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise JsonFormatError(
            f"{source}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}): "
            "a file of JSON lines is expected, not a binary file such as an AOF"
        ) from None
    frames = bytearray()
    count = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            op = _core.from_json(line)
        except JsonFormatError as e:
            raise JsonFormatError(f"{source}:{number}: {e}", line=number) from None
        frames += _core.encode(op)
        count += 1
    # All lines are checked before anything is written: a bad line leaves no file.
    write_file_atomically(args.out, bytes(frames))
    print(
        f"wrote {count} operations, {len(frames)} bytes to {os.fspath(args.out)}", file=sys.stderr
    )
    return 0
