"""``openmatch-persistence aof ...``: AOF files as JSON lines and back."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from openmatch_persistence import _core
from openmatch_persistence.errors import JsonFormatError
from openmatch_persistence.fileio import write_file_atomically


def register(subparsers: Any) -> None:
    aof = subparsers.add_parser("aof", help="inspect and convert AOF files")
    commands = aof.add_subparsers(dest="aof_command", metavar="AOF_COMMAND", required=True)

    dump = commands.add_parser(
        "dump", help="print each operation as one JSON line (aof-format.md section 4)"
    )
    dump.add_argument("path", help="an AOF segment file")
    dump.set_defaults(handler=cmd_dump)

    encode = commands.add_parser("encode", help="write an AOF file from JSON lines")
    encode.add_argument("jsonl", help="a file of JSON lines, one operation each ('-' for stdin)")
    encode.add_argument("out", help="the AOF file to write (must not exist)")
    encode.set_defaults(handler=cmd_encode)


def cmd_dump(args: argparse.Namespace) -> int:
    with open(args.path, "rb") as f:
        data = f.read()
    out = sys.stdout
    for op in _core.decode_all(data):
        out.write(_core.to_json(op))
        out.write("\n")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    if args.jsonl == "-":
        lines = sys.stdin.read().splitlines()
        source = "<stdin>"
    else:
        with open(args.jsonl, encoding="utf-8") as f:
            lines = f.read().splitlines()
        source = args.jsonl
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
