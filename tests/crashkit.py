"""Crash states, as ALICE (Pillai et al., OSDI 2014) makes them: record the
file-system operations of a workload, then build the states a machine crash
may leave under a pessimistic POSIX model, and put each on disk.

Recording: the workload runs in a child process under ``strace -f`` (the
Rust writer, Python's own file code and SQLite alike), which prints every
file-system system call with its data (``-xx``) and its descriptors' paths
(``-y``). :func:`record` turns the calls that touch the workload's root into
logical operations on inodes and names (:class:`Op`). The workload marks
what it has been promised by writing ``mark ...`` lines to ``/dev/null``:
those writes are in the trace, in order with everything else.

The model (:func:`crash_states`), after any prefix of the operations:

* a write or truncation is durable once an fsync/fdatasync of its file
  follows; before that it may be lost, kept, or kept in part (its first
  sectors, 512 bytes each, with the rest of its range zero-filled: a size
  that reached the disk before the data), independently of the others,
  so in any order;
* a name operation (create, mkdir, link, rename, unlink) is durable once an
  fsync of its directory follows; before that any subset may be lost,
  in any order;
* nothing else persists: ``-shm`` files (SQLite rebuilds them) and files
  outside the root are not modelled.

A self-check: the state with every operation kept must equal what is on
disk at the end of the recording (:func:`record` asserts it), so a system
call the model misread cannot pass unnoticed.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

SECTOR = 512
MARKER = "/dev/null"

#: The system calls recorded; any other call on a modelled file is not
#: traced, so the end-state self-check catches one the model does not know.
TRACED = (
    "openat,open,creat,write,pwrite64,writev,pwritev,pwritev2,lseek,copy_file_range,sendfile,"
    "ftruncate,truncate,fsync,fdatasync,mkdir,mkdirat,unlink,unlinkat,rmdir,rename,renameat,"
    "renameat2,link,linkat,close,fallocate"
)

STRACE = shutil.which("strace")


@dataclass(frozen=True)
class Op:
    """One logical file-system operation, or a mark of the workload.

    ``kind``: ``mkdir``, ``create``, ``unlink``, ``rename``, ``link``,
    ``rmdir`` (name operations on ``path``/``dest``), ``write``, ``trunc``
    (data of inode ``ino``), ``fsync`` (inode ``ino``), ``fsyncdir``
    (directory ``path``) or ``mark`` (``text``)."""

    kind: str
    path: str = ""
    dest: str = ""
    ino: int = -1
    offset: int = 0
    data: bytes = b""
    size: int = 0
    text: str = ""

    @property
    def is_name_op(self) -> bool:
        return self.kind in ("mkdir", "create", "unlink", "rename", "link", "rmdir")

    @property
    def is_data_op(self) -> bool:
        return self.kind in ("write", "trunc")

    @property
    def directory(self) -> str:
        """The directory whose fsync makes this name operation durable."""
        return os.path.dirname(self.dest if self.kind in ("rename", "link") else self.path)


@dataclass
class Tree:
    """Names and inode contents: the base a recording starts from, and each
    crash state."""

    dirs: set[str] = field(default_factory=set)
    names: dict[str, int] = field(default_factory=dict)
    data: dict[int, bytearray] = field(default_factory=dict)

    def copy(self) -> Tree:
        return Tree(
            set(self.dirs), dict(self.names), {i: bytearray(d) for i, d in self.data.items()}
        )

    def apply(self, op: Op) -> None:
        """Applies ``op``; a name operation whose source or directory a lost
        operation removed does nothing (as it could not have happened)."""
        k = op.kind
        if k == "mkdir":
            if os.path.dirname(op.path) in self.dirs:
                self.dirs.add(op.path)
        elif k == "create":
            self.data.setdefault(op.ino, bytearray())
            if os.path.dirname(op.path) in self.dirs:
                self.names[op.path] = op.ino
        elif k == "unlink":
            self.names.pop(op.path, None)
        elif k == "rmdir":
            if not any(os.path.dirname(n) == op.path for n in [*self.names, *self.dirs]):
                self.dirs.discard(op.path)
        elif k in ("rename", "link"):
            if op.path in self.names and os.path.dirname(op.dest) in self.dirs:
                self.names[op.dest] = self.names[op.path]
                if k == "rename":
                    del self.names[op.path]
        elif k == "write":
            buf = self.data.setdefault(op.ino, bytearray())
            end = op.offset + len(op.data)
            if len(buf) < end:
                buf.extend(bytes(end - len(buf)))
            buf[op.offset : end] = op.data
        elif k == "trunc":
            buf = self.data.setdefault(op.ino, bytearray())
            if op.size < len(buf):
                del buf[op.size :]
            else:
                buf.extend(bytes(op.size - len(buf)))

    def files(self) -> dict[str, bytes]:
        return {n: bytes(self.data.get(i, b"")) for n, i in self.names.items()}

    def digest(self) -> str:
        h = hashlib.sha256()
        for d in sorted(self.dirs):
            h.update(b"d" + d.encode() + b"\0")
        for n, content in sorted(self.files().items()):
            h.update(b"f" + n.encode() + b"\0" + hashlib.sha256(content).digest())
        return h.hexdigest()

    def materialise(self, root: str) -> None:
        """Puts this state on disk at ``root`` (replacing what is there)."""
        shutil.rmtree(root, ignore_errors=True)
        for d in sorted(self.dirs, key=len):
            if d == root or d.startswith(root + "/"):
                os.makedirs(d, mode=0o700, exist_ok=True)
        for name, content in self.files().items():
            if os.path.dirname(name) in self.dirs and name.startswith(root + "/"):
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, content)
                finally:
                    os.close(fd)


def scan_tree(root: str) -> Tree:
    """``root`` as it is on disk, as a tree (every byte durable)."""
    tree = Tree()
    parent = os.path.dirname(root)
    tree.dirs.add(parent)
    if not os.path.isdir(root):
        return tree
    ino = 0
    for d, _, files in os.walk(root):
        tree.dirs.add(d)
        for f in files:
            if _modelled(os.path.join(d, f), root):
                ino -= 1
                tree.names[os.path.join(d, f)] = ino
                tree.data[ino] = bytearray(Path(d, f).read_bytes())
    return tree


def _modelled(path: str, root: str) -> bool:
    return (path == root or path.startswith(root + "/")) and not path.endswith("-shm")


# --- recording -----------------------------------------------------------------

_HEX = re.compile(r"\\x([0-9a-f]{2})")
_LINE = re.compile(r"^(\d+) +(\w+)\((.*)\) += (-?\d+)(?:<(.*)>)?")
_UNFINISHED = re.compile(r"^(\d+) +(\w+)\((.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>(.*)$")


def _unhex(text: str) -> bytes:
    return bytes(int(h, 16) for h in _HEX.findall(text))


def _args(text: str) -> list[str]:
    """Top-level arguments of a call (strings are all \\x escapes)."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[{<(":
            depth += 1
        elif ch in "]}>)":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _fd(arg: str) -> tuple[int | None, str | None]:
    """A descriptor argument ``3<path>`` (``AT_FDCWD<cwd>``)."""
    m = re.match(r"^(-?\d+|AT_FDCWD)<(.*)>$", arg)
    if m is None:
        return None, None
    num = -100 if m.group(1) == "AT_FDCWD" else int(m.group(1))
    return num, _unhex(m.group(2)).decode()


def _calls(trace: str) -> Iterator[tuple[str, list[str], int, str | None]]:
    """(name, arguments, result, the result's path) of each successful call,
    in completion order (an interrupted call is joined with its end)."""
    pending: dict[str, tuple[str, str]] = {}
    for line in trace.splitlines():
        m = _UNFINISHED.match(line)
        if m:
            pending[m.group(1)] = (m.group(2), m.group(3))
            continue
        m = _RESUMED.match(line)
        if m:
            name, head = pending.pop(m.group(1))
            line = f"{m.group(1)} {name}({head}{m.group(3)}"
        m = _LINE.match(line)
        if m is None or int(m.group(4)) < 0:
            continue
        ret_path = _unhex(m.group(5)).decode() if m.group(5) else None
        yield m.group(2), _args(m.group(3)), int(m.group(4)), ret_path


class _Recorder:
    """Turns system calls into :class:`Op` with a model of the kernel's
    (volatile) view: names, inodes, descriptors and their offsets."""

    def __init__(self, root: str, base: Tree, cwd: str) -> None:
        self.root, self.cwd = root, cwd
        self.tree = base.copy()
        self.fds: dict[int, tuple[str, int | str]] = {}  # fd -> ("file", ino) | ("dir", path)
        self.offsets: dict[int, int] = {}
        self.next_ino = 1
        self.ops: list[Op] = []

    def path(self, arg: str, dirfd: str | None = None) -> str:
        p = _unhex(arg).decode()
        if not p.startswith("/"):
            base = self.cwd
            if dirfd is not None:
                _, d = _fd(dirfd)
                base = d or base
            p = os.path.join(base, p)
        return os.path.normpath(p)

    def emit(self, op: Op) -> None:
        self.tree.apply(op)
        self.ops.append(op)

    def call(self, name: str, a: list[str], ret: int, ret_path: str | None) -> None:
        if name in ("open", "openat", "creat"):
            path = self.path(a[1], a[0]) if name == "openat" else self.path(a[0])
            flags = a[2] if name == "openat" else (a[1] if name == "open" else "O_CREAT")
            self.opened(ret, path, flags)
        elif name == "close":
            self.fds.pop(int(a[0].split("<")[0]), None)
        elif name in ("write", "pwrite64"):
            fd = int(a[0].split("<")[0])
            data = _unhex(a[1])[:ret]
            if name == "write" and _fd(a[0])[1] == MARKER:
                self.ops.append(Op("mark", text=data.decode()))
                return
            self.wrote(fd, data, int(a[3]) if name == "pwrite64" else None)
        elif name in ("writev", "pwritev", "pwritev2", "sendfile", "fallocate"):
            self.refuse_if_modelled(name, a[0])
        elif name == "lseek":
            fd = int(a[0].split("<")[0])
            if fd in self.fds:
                self.offsets[fd] = ret
        elif name == "copy_file_range":
            self.copied(a, ret)
        elif name == "ftruncate":
            entry = self.fds.get(int(a[0].split("<")[0]))
            if entry is not None and entry[0] == "file":
                self.emit(Op("trunc", ino=int(entry[1]), size=int(a[1])))
        elif name == "truncate":
            path = self.path(a[0])
            if path in self.tree.names:
                self.emit(Op("trunc", ino=self.tree.names[path], size=int(a[1])))
        elif name in ("fsync", "fdatasync"):
            entry = self.fds.get(int(a[0].split("<")[0]))
            if entry is not None:
                if entry[0] == "dir":
                    self.emit(Op("fsyncdir", path=str(entry[1])))
                else:
                    self.emit(Op("fsync", ino=int(entry[1])))
        elif name in ("mkdir", "mkdirat"):
            path = self.path(a[0]) if name == "mkdir" else self.path(a[1], a[0])
            if _modelled(path, self.root):
                self.emit(Op("mkdir", path=path))
        elif name in ("unlink", "unlinkat", "rmdir"):
            path = self.path(a[0]) if name != "unlinkat" else self.path(a[1], a[0])
            if not _modelled(path, self.root):
                return
            if name == "rmdir" or (name == "unlinkat" and "AT_REMOVEDIR" in a[2]):
                self.emit(Op("rmdir", path=path))
            else:
                self.emit(Op("unlink", path=path))
        elif name in ("rename", "renameat", "renameat2", "link", "linkat"):
            if name in ("rename", "link"):
                src, dst = self.path(a[0]), self.path(a[1])
            else:
                src, dst = self.path(a[1], a[0]), self.path(a[3], a[2])
            if _modelled(src, self.root) or _modelled(dst, self.root):
                assert _modelled(src, self.root) and _modelled(dst, self.root), (name, src, dst)
                self.emit(Op("rename" if name.startswith("rename") else "link", src, dst))

    def refuse_if_modelled(self, name: str, fd_arg: str) -> None:
        if int(fd_arg.split("<")[0]) in self.fds:
            raise AssertionError(f"the model does not know {name} on {fd_arg}")

    def opened(self, fd: int, path: str, flags: str) -> None:
        if path in self.tree.dirs:  # the root's parent too: its fsync covers the root
            self.fds[fd] = ("dir", path)
            return
        if not _modelled(path, self.root):
            return
        ino = self.tree.names.get(path)
        if ino is None:
            assert "O_CREAT" in flags, (path, flags)
            ino = self.next_ino
            self.next_ino += 1
            self.emit(Op("create", path=path, ino=ino))
        elif "O_TRUNC" in flags and self.tree.data.get(ino):
            self.emit(Op("trunc", ino=ino, size=0))
        self.fds[fd] = ("file", ino)
        self.offsets[fd] = len(self.tree.data.get(ino, b"")) if "O_APPEND" in flags else 0

    def wrote(self, fd: int, data: bytes, offset: int | None) -> None:
        entry = self.fds.get(fd)
        if entry is None or entry[0] != "file":
            return
        if offset is None:
            offset = self.offsets.get(fd, 0)
            self.offsets[fd] = offset + len(data)
        self.emit(Op("write", ino=int(entry[1]), offset=offset, data=data))

    def copied(self, a: list[str], ret: int) -> None:
        fd_in, fd_out = int(a[0].split("<")[0]), int(a[2].split("<")[0])
        out = self.fds.get(fd_out)
        if out is None:
            return
        source = self.fds.get(fd_in)
        assert source is not None and source[0] == "file", "copy from an unmodelled file"
        assert a[1] == "NULL" and a[3] == "NULL", a
        off_in, off_out = self.offsets.get(fd_in, 0), self.offsets.get(fd_out, 0)
        data = bytes(self.tree.data[int(source[1])][off_in : off_in + ret])
        self.offsets[fd_in], self.offsets[fd_out] = off_in + ret, off_out + ret
        self.emit(Op("write", ino=int(out[1]), offset=off_out, data=data))


@dataclass(frozen=True)
class Recording:
    root: str
    base: Tree
    ops: tuple[Op, ...]

    def marks(self, upto: int) -> list[str]:
        return [op.text for op in self.ops[:upto] if op.kind == "mark"]


def record(script: str, args: Sequence[str], root: str, *, cwd: str) -> Recording:
    """Runs ``python -c script *args`` under strace and records what it does
    under ``root`` (which may not exist yet)."""
    import sys

    assert STRACE is not None, "the crash-state suite needs strace (.ci/run installs it)"
    base = scan_tree(root)
    with tempfile.NamedTemporaryFile(prefix="crashkit-", suffix=".trace") as out:
        cmd = [STRACE, "-f", "-qq", "--seccomp-bpf", "-y", "-xx", "-s", "16777216"]
        cmd += ["-e", f"trace={TRACED}", "-o", out.name, sys.executable, "-c", script, *args]
        run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        trace = Path(out.name).read_text()
    rec = _Recorder(root, base, cwd)
    for name, a, ret, ret_path in _calls(trace):
        rec.call(name, a, ret, ret_path)
    recording = Recording(root, base, tuple(rec.ops))
    # The self-check: everything kept is what the disk holds.
    on_disk = scan_tree(root).files()
    modelled = {n: c for n, c in rec.tree.files().items() if _modelled(n, root)}
    assert modelled.keys() == on_disk.keys(), (sorted(modelled), sorted(on_disk))
    for name, content in on_disk.items():
        assert modelled[name] == content, f"{name}: the model's bytes differ from the disk's"
    return recording


# --- crash states --------------------------------------------------------------


@dataclass(frozen=True)
class CrashState:
    """The operations done when the machine crashed, and what reached the
    disk: ``kept`` maps each un-fsynced operation's index to how much of it
    persisted (None: all; an int: that many of its sectors, the rest of its
    range zero-filled; absent: lost)."""

    crash_after: int
    kept: tuple[tuple[int, int | None], ...]
    how: str

    def tree(self, recording: Recording) -> Tree:
        tree = recording.base.copy()
        kept = dict(self.kept)
        volatile = _volatile(recording.ops, self.crash_after)
        for i, op in enumerate(recording.ops[: self.crash_after]):
            if op.kind in ("mark", "fsync", "fsyncdir"):
                continue
            if i not in volatile:
                tree.apply(op)
            elif i in kept:
                tree.apply(_partly(op, kept[i]))
        return tree


def _partly(op: Op, sectors: int | None) -> Op:
    if sectors is None or op.kind != "write":
        return op
    # The first ``sectors`` sectors of the file that the write touches got
    # its data; the rest of its range reads as zeros.
    cut = max(0, min(len(op.data), (op.offset // SECTOR + sectors) * SECTOR - op.offset))
    return replace(op, data=op.data[:cut] + bytes(len(op.data) - cut))


def _volatile(ops: Sequence[Op], crash_after: int) -> set[int]:
    """Indices of the operations before the crash that no later fsync made
    durable."""
    volatile: set[int] = set()
    synced_ino: set[int] = set()
    synced_dir: set[str] = set()
    for i in range(crash_after - 1, -1, -1):
        op = ops[i]
        if op.kind == "fsync":
            synced_ino.add(op.ino)
        elif op.kind == "fsyncdir":
            synced_dir.add(op.path)
        elif op.is_data_op and op.ino not in synced_ino:
            volatile.add(i)
        elif op.is_name_op and op.directory not in synced_dir:
            volatile.add(i)
    return volatile


def crash_states(
    recording: Recording, points: Sequence[int], *, random_subsets: int, seed: int
) -> Iterator[CrashState]:
    """The crash states at each crash point (a count of operations done),
    distinct per point: all un-fsynced operations kept (what a process
    crash leaves), all lost, each name operation lost alone, each file's
    un-fsynced writes lost alone, the last write of each file torn at each
    sector with its size ahead of its data, and ``random_subsets`` random
    mixes of kept, lost and torn."""
    rnd = random.Random(seed)
    for k in points:
        seen: set[tuple[tuple[int, int | None], ...]] = set()
        for kept, how in _candidates(recording.ops, k, random_subsets, rnd):
            key = tuple(sorted(kept.items()))
            if key not in seen:
                seen.add(key)
                yield CrashState(k, key, how)


def _candidates(
    ops: Sequence[Op], k: int, random_subsets: int, rnd: random.Random
) -> Iterator[tuple[dict[int, int | None], str]]:
    volatile = sorted(_volatile(ops, k))
    everything: dict[int, int | None] = {i: None for i in volatile}
    yield everything, "all kept"
    yield {}, "all lost"
    for i in volatile:
        if ops[i].is_name_op:
            yield {j: None for j in volatile if j != i}, f"lost {ops[i].kind}"
    by_ino: dict[int, list[int]] = {}
    for i in volatile:
        if ops[i].is_data_op:
            by_ino.setdefault(ops[i].ino, []).append(i)
    for indices in by_ino.values():
        yield {j: None for j in volatile if j not in indices}, "a file's writes lost"
        last = ops[indices[-1]]
        if last.kind == "write":
            sectors = (last.offset + len(last.data) - 1) // SECTOR - last.offset // SECTOR + 1
            for s in range(sectors):
                yield {**everything, indices[-1]: s}, "last write torn, size ahead"
    for _ in range(random_subsets):
        mix: dict[int, int | None] = {}
        for i in volatile:
            roll = rnd.random()
            if roll < 0.4:
                mix[i] = None
            elif roll < 0.6 and ops[i].kind == "write":
                mix[i] = rnd.randrange(0, len(ops[i].data) // SECTOR + 2)
        yield mix, "random mix"


def crash_points(recording: Recording) -> list[int]:
    """Every crash point: after each operation (and before the first)."""
    return list(range(len(recording.ops) + 1))


# --- the version before the fixes ----------------------------------------------


def without_fsync_after_mkdir(ops: Sequence[Op]) -> tuple[Op, ...]:
    """Before the fix: a new data directory and its ``aof/`` were made with
    os.makedirs, and nothing fsynced the directories that hold them (the
    directory fsyncs that follow a mkdir, up to the next other operation,
    are dropped)."""
    out: list[Op] = []
    made: set[str] = set()
    for op in ops:
        if op.kind == "mkdir":
            made.add(os.path.dirname(op.path))
        elif op.kind == "fsyncdir" and op.path in made:
            made.discard(op.path)
            continue
        elif op.kind != "mark":
            made.clear()
        out.append(op)
    return tuple(out)


def one_fsync_per_deletion_run(ops: Sequence[Op]) -> tuple[Op, ...]:
    """Before the fix: compaction unlinked every covered segment, then
    fsynced the directory once (the fsyncs between two segment unlinks are
    dropped)."""
    out: list[Op] = list(ops)
    keep = [True] * len(out)
    for i, op in enumerate(out):
        if (
            op.kind == "fsyncdir"
            and i > 0
            and out[i - 1].kind == "unlink"
            and out[i - 1].path.endswith(".aof")
            and i + 1 < len(out)
            and out[i + 1].kind == "unlink"
            and out[i + 1].path.endswith(".aof")
        ):
            keep[i] = False
    return tuple(op for op, k in zip(out, keep) if k)


def one_fsync_after_all_removals(ops: Sequence[Op]) -> tuple[Op, ...]:
    """Before the fix: a repair removed every part (the segment unlinks,
    last first, then the truncation) and fsynced the directory once, after
    all of them: each directory fsync right after a segment unlink moves to
    the end."""
    out: list[Op] = []
    moved: list[Op] = []
    for i, op in enumerate(ops):
        after_unlink = i > 0 and ops[i - 1].kind == "unlink" and ops[i - 1].path.endswith(".aof")
        if op.kind == "fsyncdir" and after_unlink:
            moved.append(op)
            continue
        out.append(op)
    return (*out, *moved[-1:])


def without_new_file_sync(ops: Sequence[Op], suffix: str) -> tuple[Op, ...]:
    """Before the fix: the file whose name ends with ``suffix`` was created
    with a bare open (no fsync of it or of its directory right after)."""
    out: list[Op] = []
    skip = 0
    for op in ops:
        if op.kind == "create" and op.path.endswith(suffix):
            skip = 2
            out.append(op)
            continue
        if skip and op.kind in ("fsync", "fsyncdir"):
            skip -= 1
            continue
        skip = 0
        out.append(op)
    return tuple(out)
