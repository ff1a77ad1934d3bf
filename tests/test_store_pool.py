"""Concurrent readers and a writer through the pool: every read sees the
state of exactly one checkpoint."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from test_store_support import make_order

from openmatch_persistence.errors import StoreError
from openmatch_persistence.store import ChangeBatch
from openmatch_persistence.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

BATCHES = 30
ORDERS_PER_BATCH = 20
READERS = 6

pytest_plugins = ["test_store_support"]  # the store fixtures


def test_concurrent_reads_and_writes_through_the_pool(database_url: str, pg_schema: str) -> None:
    store = PostgresStore(database_url, schema=pg_schema, max_connections=4)
    store.migrate()
    done = threading.Event()
    observed: list[tuple[int, int]] = []

    def writer() -> None:
        try:
            for i in range(1, BATCHES + 1):
                orders = [make_order() for _ in range(ORDERS_PER_BATCH)]
                store.write_changes(ChangeBatch(orders=orders, position=i))
        finally:
            done.set()

    def reader() -> int:
        reads = 0
        while not done.is_set() or reads == 0:
            state = store.load_state()
            position = 0 if state.checkpoint is None else state.checkpoint.position
            observed.append((position, len(state.orders)))
            with store.connection() as conn:
                conn.execute("SELECT count(*) FROM orders").fetchone()
            reads += 1
        return reads

    try:
        with ThreadPoolExecutor(READERS + 1) as ex:
            w = ex.submit(writer)
            readers = [ex.submit(reader) for _ in range(READERS)]
            w.result()
            assert all(r.result() > 0 for r in readers)
        assert store.pool.get_stats().get("pool_max", 0) <= 4
        assert store.pool.max_size == 4
        # Each snapshot holds exactly the rows of its checkpoint's batches.
        for position, count in observed:
            assert count == position * ORDERS_PER_BATCH
        final = store.load_state()
        assert final.checkpoint is not None and final.checkpoint.position == BATCHES
        assert len(final.orders) == BATCHES * ORDERS_PER_BATCH
    finally:
        store.close()


def test_the_pool_size_is_configurable(database_url: str, pg_schema: str) -> None:
    store = PostgresStore(database_url, schema=pg_schema)
    try:
        assert store.pool.max_size == 10
    finally:
        store.close()
    assert repr(store).startswith("PostgresStore('postgresql://")


def test_a_store_opens_its_pool_at_first_use_not_when_made_or_migrated(
    database_url: str, pg_schema: str
) -> None:
    store = PostgresStore(database_url, schema=pg_schema)
    try:
        store.migrate()  # on a connection of its own
        assert store.pool.closed
        assert store.pool.get_stats().get("connections_num", 0) == 0
        assert store.checkpoint() is None
        assert not store.pool.closed
    finally:
        store.close()


def test_a_pooled_connection_whose_backend_died_is_replaced_not_handed_out(
    database_url: str, pg_schema: str
) -> None:
    # The pool checks a connection before it lends it: one whose server
    # process is gone (terminated here; a restart does the same to all) is
    # dropped and another made, and the call never sees it.
    store = PostgresStore(database_url, schema=pg_schema, max_connections=1)
    try:
        store.migrate()
        with store.connection() as conn:
            dead = conn.info.backend_pid
        with psycopg.connect(database_url, autocommit=True) as admin:
            # Returns once the backend has exited (or false after 60 s).
            [(gone,)] = admin.execute("SELECT pg_terminate_backend(%s, 60000)", (dead,))
        assert gone
        assert store.checkpoint() is None
        with store.connection() as conn:
            assert conn.info.backend_pid != dead
    finally:
        store.close()


def test_a_store_whose_server_does_not_answer_fails_after_its_timeout() -> None:
    # Nothing listens on port 1. The pool opens without waiting for a
    # connection (it keeps trying in the background); a call waits the
    # store's timeout for one, then fails with a StoreError, password masked.
    store = PostgresStore("postgresql://postgres:hunter2@127.0.0.1:1/test", timeout=0.2)
    with store, pytest.raises(StoreError) as refused:
        store.checkpoint()
    assert str(refused.value).startswith(
        "no connection to postgresql://postgres:****@127.0.0.1:1/test within 0.2 s: "
    )
    assert "hunter2" not in str(refused.value)


def test_a_closed_store_refuses_with_a_store_error(database_url: str, pg_schema: str) -> None:
    # Its pool is not opened again: the call fails as every driver error
    # does, as a StoreError naming the database.
    store = PostgresStore(database_url, schema=pg_schema)
    store.migrate()
    assert store.checkpoint() is None
    store.close()
    with pytest.raises(StoreError) as refused:
        store.checkpoint()
    assert str(refused.value) == (
        f"{store.label}: PoolClosed: the pool 'openmatch-store' is already closed"
    )
