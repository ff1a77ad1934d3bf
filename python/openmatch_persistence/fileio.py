"""Files written whole or not at all, owner-only, durable once returned."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from openmatch_persistence import _core
from openmatch_persistence.errors import AofError

StrPath = Union[str, "os.PathLike[str]"]


def create_file_durably(path: StrPath) -> bool:
    """Creates ``path`` empty (0600) unless it exists, with its directory
    and any missing ancestors (0700, by ``_core.create_dir_durably``), and
    makes the new entry durable: a file that a later commit writes to (an
    SQLite database: SQLite fsyncs the directory for its journals, not for
    the main file) must not lose its name in a crash. Returns whether it
    was created."""
    target = Path(path)
    _core.create_dir_durably(target.parent)
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Opened as the caller will, so that a directory or an unreadable
        # file is the OSError it would get, said here.
        os.close(os.open(target, os.O_RDWR))
        return False
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _core.fsync_directory(target.parent)
    return True


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
    _core.fsync_directory(target.parent)
