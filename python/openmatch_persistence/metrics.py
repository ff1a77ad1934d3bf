"""Prometheus metrics of a :class:`Persistence`, through ``prometheus_client``.

Nothing is counted on the write path for this: a collector reads the
counters that already exist (``Persistence.stats()``: the writer's, the
flusher's, the compactions) when Prometheus scrapes, so an append costs the
same with or without metrics.

    from prometheus_client import start_http_server
    registry = CollectorRegistry()
    registry.register(PersistenceCollector(p))
    start_http_server(9464, addr="127.0.0.1", registry=registry)

Every name starts with ``openmatch_persistence_``. The fsync durations are
a summary of quantiles (p50, p90, p99, max), not a histogram: the Rust
writer keeps quantiles, not bucket counts, and a histogram made up from
quantiles would be invented data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from openmatch_persistence.follower import Follower
    from openmatch_persistence.persistence import Persistence

PREFIX = "openmatch_persistence_"


class _Source(Protocol):
    """What the collector reads: a Persistence, or anything shaped like one."""

    def stats(self) -> dict[str, Any]: ...


class PersistenceCollector(Collector):
    """The metrics of one open :class:`Persistence`, read at each scrape."""

    def __init__(
        self, persistence: Persistence | _Source, *, recovery_seconds: float | None = None
    ):
        self._p = persistence
        recovery = getattr(persistence, "recovery", None)
        self._recovery_seconds = (
            recovery_seconds if recovery_seconds is not None else getattr(recovery, "seconds", None)
        )

    def _writer_failed(self) -> bool | None:
        # The journal's flag; Persistence.stats() does not carry it yet.
        journal = getattr(self._p, "_journal", None)
        return None if journal is None else bool(journal.failed)

    def collect(self) -> Iterator[Metric]:
        stats = self._p.stats()
        writer = stats["writer"]
        flusher = stats["flusher"]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        yield counter("appends", "Operations appended to the AOF.", writer["appends"])
        yield counter("appended_bytes", "Bytes appended to the AOF.", writer["bytes"])
        yield counter("fsyncs", "fsync (fdatasync) calls of the AOF writer.", writer["fsyncs"])
        yield gauge(
            "records_per_fsync",
            "Operations made durable per fsync, on average (group commit).",
            writer["records_per_fsync"],
        )
        yield gauge(
            "records_per_fsync_max",
            "The most operations one fsync made durable.",
            writer["max_records_per_fsync"],
        )
        # The writer counts every fsync into fixed buckets (writer/stats.rs,
        # FSYNC_BUCKETS_US); the last, +Inf, is every fsync.
        buckets = [(repr(le), n) for le, n in writer["fsync_buckets"]]
        yield HistogramMetricFamily(
            PREFIX + "fsync_duration_seconds",
            "Duration of the AOF writer's fsyncs (fdatasync).",
            buckets=[*buckets, ("+Inf", writer["fsyncs"])],
            sum_value=writer["fsync_seconds_sum"],
        )
        yield gauge("fsync_duration_max_seconds", "The longest fsync so far.", writer["fsync_max"])
        yield gauge("position", "The AOF position after the last operation.", stats["position"])
        yield gauge("aof_bytes", "Bytes held in the AOF's segments.", stats["aof_bytes"])
        yield gauge(
            "flush_lag_seconds",
            "Age of the oldest change not yet in the database.",
            flusher["seconds_behind"],
        )
        yield gauge(
            "flush_lag_bytes",
            "AOF bytes taken from the journal but not yet in the database.",
            flusher["aof_bytes_behind"],
        )
        yield counter("flushes", "Flushes committed to the database.", flusher["flushes"])
        yield counter(
            "flushed_rows", "Rows written to the database by flushes.", flusher["rows_written"]
        )
        yield counter("flush_failures", "Flushes that failed (retried).", flusher["failures"])
        yield counter("compactions", "Compactions done.", stats["compactions"])
        yield gauge(
            "compaction_failed",
            "1 if the last compaction failed.",
            1.0 if stats.get("last_compaction_error") else 0.0,
        )
        if self._recovery_seconds is not None:
            yield gauge(
                "recovery_duration_seconds",
                "How long the recovery at open took.",
                self._recovery_seconds,
            )
        failed = self._writer_failed()
        if failed is not None:
            yield gauge(
                "writer_failed",
                "1 once the AOF writer has lost durability and refuses appends.",
                1.0 if failed else 0.0,
            )


class MetricsServer:
    """``/metrics`` over HTTP on ``addr:port`` (127.0.0.1 by default: the
    metrics say how busy a node is, nothing to publish beyond the host)."""

    def __init__(self, registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> None:
        self._server, self._thread = start_http_server(port, addr=addr, registry=registry)
        self.addr = addr
        self.port: int = self._server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if isinstance(self._thread, threading.Thread):
            self._thread.join()


def serve(persistence: Persistence, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Serves ``persistence``'s metrics on ``addr:port`` (0: any free port)."""
    registry = CollectorRegistry()
    registry.register(PersistenceCollector(persistence))
    return MetricsServer(registry, port, addr)


class FollowerCollector(Collector):
    """The metrics of a :class:`~openmatch_persistence.follower.Follower`
    (``follow``), read at each scrape."""

    def __init__(self, follower: Follower) -> None:
        self._f = follower

    def collect(self) -> Iterator[Metric]:
        stats = self._f.stats()
        yield GaugeMetricFamily(
            PREFIX + "position", "The AOF position applied to the state.", value=stats.position
        )
        yield GaugeMetricFamily(
            PREFIX + "flushed_position",
            "The AOF position the database holds (its checkpoint).",
            value=stats.flushed_position or 0,
        )
        yield GaugeMetricFamily(
            PREFIX + "flush_lag_seconds",
            "Age of the oldest change not yet in the database.",
            value=stats.seconds_behind,
        )
        yield CounterMetricFamily(
            PREFIX + "followed_operations", "Operations applied from the log.", stats.operations
        )
        yield CounterMetricFamily(PREFIX + "compactions", "Compactions done.", stats.compactions)


def serve_follower(follower: Follower, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Serves ``follower``'s metrics on ``addr:port`` (0: any free port)."""
    registry = CollectorRegistry()
    registry.register(FollowerCollector(follower))
    return MetricsServer(registry, port, addr)


__all__ = [
    "PREFIX",
    "FollowerCollector",
    "MetricsServer",
    "PersistenceCollector",
    "serve",
    "serve_follower",
]
