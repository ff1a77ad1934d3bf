"""A throwaway Redis with ``appendonly yes`` + ``appendfsync always``, the
peer the fsync benchmark compares against.

Spoken to in raw RESP over sockets: one command, one reply, no pipelining,
the same one-record-per-call shape as the writer's threads, and no client
library to install; from threads (:class:`RespClient`) or from asyncio
tasks (:class:`AsyncRespClient`).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def resp_command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class RespClient:
    """One blocking connection; enough RESP for simple replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def call(self, command: bytes) -> bytes:
        self.sock.sendall(command)
        line = self.file.readline()
        if not line or line.startswith(b"-"):
            raise RuntimeError(f"redis replied {line!r}")
        return line

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class AsyncRespClient:
    """One asyncio connection (streams), one command and one reply at a
    time: the asyncio peer of :class:`RespClient`.

    redis-py's asyncio client is not a dependency of this package (nor
    installed where the benchmark ran), and it would add its own Python per
    command (connection pool, response parser, retries), which would make
    Redis look slower than the server is. This client does the least an
    asyncio client can: write the command, read the one-line reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> AsyncRespClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def call(self, command: bytes) -> bytes:
        self.writer.write(command)
        line = await self.reader.readline()
        if not line or line.startswith(b"-"):
            raise RuntimeError(f"redis replied {line!r}")
        return line

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class RedisPeer:
    """``redis-server`` in a temporary directory under ``parent`` (so its AOF
    is on the same file system as the writer's), on a free loopback port."""

    def __init__(self, parent: Path, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError("redis-server not found on PATH")
        self.dir = Path(tempfile.mkdtemp(prefix="redis-peer-", dir=parent)).resolve()
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                found,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                client = RespClient(self.port)
                client.call(resp_command(b"PING"))
                client.close()
                break
            except OSError as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.dir / "redis.log"
                    tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                    self.stop()
                    raise RuntimeError(f"redis-server did not start: {tail.strip()}") from e
                time.sleep(0.05)

    def version(self) -> str:
        client = RespClient(self.port)
        try:
            client.sock.sendall(resp_command(b"INFO", b"server"))
            header = client.file.readline()
            body = client.file.read(int(header[1:]) + 2).decode()
        finally:
            client.close()
        for line in body.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1]
        return "?"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisPeer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
