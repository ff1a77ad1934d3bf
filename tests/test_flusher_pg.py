"""The flusher against a PostgreSQL that goes away: an unreachable server
(a TCP proxy we cut) and a real server restart during flushes."""

from __future__ import annotations

import glob
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from faultkit import ensure_running, pg_ctl
from test_flusher import produce
from test_store_support import FakeState, assert_store_holds, make_order

from openmatch_persistence.flusher import Flusher
from openmatch_persistence.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

CATCH_UP_LIMIT = 60.0  # seconds: a bound against hanging, not a speed check

pytest_plugins = ["test_store_support"]  # the store fixtures


class Proxy:
    """A TCP proxy to PostgreSQL that can be cut (listener and live
    connections closed) and restored on the same port: an outage as the
    client sees it, without stopping the server the other tests share."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                # shutdown() wakes the thread blocked in accept(); close()
                # alone would leave it accepting one more connection.
                try:
                    self._listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    return
                try:
                    server = socket.create_connection(self.upstream)
                except OSError:
                    client.close()
                    continue
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


@pytest.fixture
def proxy(database_url: str) -> Iterator[Proxy]:
    u = urlsplit(database_url)
    p = Proxy((u.hostname or "127.0.0.1", u.port or 5432))
    p.start()
    yield p
    p.cut()


def _via(database_url: str, port: int) -> str:
    u = urlsplit(database_url)
    netloc = u.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(u._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def wait_caught_up(flusher: Flusher, state: FakeState) -> None:
    deadline = time.monotonic() + CATCH_UP_LIMIT
    while time.monotonic() < deadline:
        s = flusher.stats()
        if s.pending_rows == 0 and s.flushed_position == state.position:
            return
        time.sleep(0.05)
    raise AssertionError(f"did not catch up: {flusher.stats()}")


def test_outage_then_catch_up(database_url: str, pg_schema: str, proxy: Proxy) -> None:
    setup = PostgresStore(database_url, schema=pg_schema)
    setup.migrate()
    setup.close()
    store = PostgresStore(
        _via(database_url, proxy.port), schema=pg_schema, timeout=0.5, connect_timeout=1
    )
    state = FakeState()
    flusher = Flusher(store, state, interval=0.02, backoff_min=0.05, backoff_max=0.2)
    try:
        flusher.start()
        produce(state, 50)
        wait_caught_up(flusher, state)
        proxy.cut()
        # The engine goes on; the flusher retries and reports its lag.
        for _ in range(20):
            produce(state, 20, keys=3)
            time.sleep(0.02)
        while flusher.stats().failures < 2:
            time.sleep(0.05)
        stats = flusher.stats()
        assert stats.pending_rows > 0 and stats.aof_bytes_behind > 0
        assert stats.seconds_behind > 0 and stats.last_error
        # Bounded by the state (latest row per key), not by the outage's length.
        assert stats.pending_rows <= len(state.orders) + len(state.trades) + len(
            state.balances
        ) + len(state.epochs)
        proxy.start()
        wait_caught_up(flusher, state)
        flusher.stop()
    finally:
        flusher.stop(final_flush=False)
        store.close()
    check = PostgresStore(database_url, schema=pg_schema)
    try:
        assert_store_holds(check, state)
    finally:
        check.close()


@pytest.mark.slow
@pytest.mark.skipif(not glob.glob("/etc/postgresql/*/main"), reason="no local cluster to restart")
def test_server_restart_during_flushes(database_url: str, pg_schema: str) -> None:
    store = PostgresStore(database_url, schema=pg_schema, timeout=1.0, connect_timeout=2)
    store.migrate()
    state = FakeState()
    flusher = Flusher(store, state, interval=0.02, backoff_min=0.05, backoff_max=0.5)
    stop = threading.Event()

    def engine() -> None:
        while not stop.is_set():
            produce(state, 10, keys=20)
            state.put_order(make_order())
            time.sleep(0.01)

    producer = threading.Thread(target=engine, daemon=True)
    try:
        flusher.start()
        producer.start()
        time.sleep(0.3)
        # Down until a flush has failed, then up again: a restart quicker
        # than one flush interval may fall between two flushes, and the
        # pool then replaces its broken connections without any failure.
        r = pg_ctl("stop")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 30
        while flusher.stats().failures == 0:
            assert time.monotonic() < deadline, "no flush failed while the server was down"
            time.sleep(0.02)
        r = pg_ctl("start")
        assert r.returncode == 0, r.stderr
        time.sleep(0.3)
        stop.set()
        producer.join()
        wait_caught_up(flusher, state)
        assert flusher.stats().failures > 0  # the restart was felt, and survived
        flusher.stop()
    finally:
        stop.set()
        ensure_running(database_url)
        flusher.stop(final_flush=False)
    try:
        assert_store_holds(store, state)  # nothing lost, nothing duplicated
    finally:
        store.close()
