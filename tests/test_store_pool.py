"""Concurrent readers and a writer through the pool: every read sees the
state of exactly one checkpoint."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_store_support import make_order

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
