"""Files written whole or not at all, owner-only, durable once returned."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from openmatch_persistence.errors import AofError

StrPath = Union[str, "os.PathLike[str]"]


def fsync_directory(directory: StrPath) -> None:
    """Makes a directory entry (a new or renamed file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: StrPath, data: bytes, *, overwrite: bool = False) -> None:
    """Writes ``data`` to a temporary file beside ``path``, fsyncs it, renames
    it into place and fsyncs the directory: a crash leaves the old state or
    the whole new file, never part of it. Mode 0600."""
    target = Path(path)
    if not overwrite and target.exists():
        raise AofError(f"{target}: already exists; refusing to overwrite")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)  # fails if target appeared meanwhile
        finally:
            tmp.unlink()
    fsync_directory(target.parent if str(target.parent) else ".")
