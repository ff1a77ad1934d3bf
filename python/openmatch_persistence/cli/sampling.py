"""What ``simulate`` measures while it runs: the flush lag, the AOF held and
the process's memory, sampled a few times a second, and the reports at the
operation counts ``--report-at`` names (the bounded-state benchmark,
docs/recovery-benchmark.md)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from openmatch_persistence.persistence import Persistence

#: Seconds between two samples: often enough for a p99 over a minute's run,
#: rare enough that the samples (a directory listing each) cost nothing.
SAMPLE_EVERY = 0.2


def rss_bytes() -> int:
    """The resident set size of this process now (Linux), else 0."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` (nearest rank), 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class RunSampler:
    """Samples a running ``Persistence``; ``sample`` is cheap to call often."""

    p: Persistence
    lags: list[float] = field(default_factory=list)
    aof_max: int = 0
    rss_max: int = 0
    last_lag: float = 0.0
    _next: float = 0.0

    def sample(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + SAMPLE_EVERY
        stats = self.p.stats()
        self.last_lag = float(stats["flusher"]["seconds_behind"])
        self.lags.append(self.last_lag)
        self.aof_max = max(self.aof_max, int(stats["aof_bytes"]))
        self.rss_max = max(self.rss_max, rss_bytes())

    def summary(self) -> dict[str, Any]:
        return {
            "flush_lag_p99": percentile(self.lags, 0.99),
            "flush_lag_max": max(self.lags, default=0.0),
            "aof_bytes_max": self.aof_max,
            "rss_max_bytes": self.rss_max,
        }

    def report(self, done: int, elapsed: float) -> dict[str, Any]:
        """The state of the run at ``done`` operations: memory, the state
        image's size and the time of a snapshot (flush and image) now, and
        the run's maxima so far."""
        self.sample(force=True)
        started = time.monotonic()
        self.p.snapshot()
        snapshot_seconds = time.monotonic() - started
        state = self.p.state
        return {
            "operations": done,
            "seconds": round(elapsed, 3),
            "rss_bytes": rss_bytes(),
            "image_bytes": len(state.to_image()),
            "snapshot_seconds": round(snapshot_seconds, 4),
            "open_orders": state.order_count,
            "retired_ids": state.retired_id_count,
            **self.summary(),
        }
