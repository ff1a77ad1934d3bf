"""What ``simulate`` measures while it runs: the flush lag, the AOF held and
the process's memory, sampled a few times a second, and the reports at the
operation counts ``--report-at`` names (the bounded-state benchmark,
docs/recovery-benchmark.md)."""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from openmatch_persistence.persistence import Persistence

#: Seconds between two samples: often enough for a p99 over a minute's run,
#: rare enough that the samples (a directory listing each) cost nothing.
SAMPLE_EVERY = 0.2
#: How many times a report writes the state's image (its median is reported).
IMAGE_SAMPLES = 3


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


#: Values a :class:`Reservoir` keeps: a p99 from 100,000 uniform samples is
#: within a fraction of a percentile of the whole run's.
RESERVOIR_SIZE = 100_000


class Reservoir:
    """A uniform sample of at most ``size`` of the values added (Vitter's
    algorithm R), for percentiles of a run of any length in bounded memory:
    a list of every append's latency grew with the run (10 MB per 10 M
    operations), which the bounded-state benchmark counts as the process's."""

    def __init__(self, size: int = RESERVOIR_SIZE, seed: int = 0) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._random.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value

    def percentile(self, q: float) -> float:
        return percentile(self.values, q)

    def max(self) -> float:
        return max(self.values, default=0.0)


@dataclass
class RunSampler:
    """Samples a running ``Persistence``; ``sample`` is cheap to call often."""

    p: Persistence
    lags: Reservoir = field(default_factory=Reservoir)
    lag_max: float = 0.0
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
        self.lags.add(self.last_lag)
        self.lag_max = max(self.lag_max, self.last_lag)
        self.aof_max = max(self.aof_max, int(stats["aof_bytes"]))
        self.rss_max = max(self.rss_max, rss_bytes())

    def summary(self) -> dict[str, Any]:
        return {
            "flush_lag_p99": self.lags.percentile(0.99),
            "flush_lag_max": self.lag_max,
            "aof_bytes_max": self.aof_max,
            "rss_max_bytes": self.rss_max,
        }

    def report(self, done: int, elapsed: float) -> dict[str, Any]:
        """The state of the run at ``done`` operations: memory, the state
        image's size and the time of a snapshot now, and the run's maxima so
        far.

        A snapshot is a flush of the rows still pending, then the image. The
        two are timed apart: the image's cost is the snapshot's own (it
        follows the hot state), the flush's is the flusher's backlog at that
        moment (it follows the database's speed, and the flusher would have
        written the same rows within its interval anyway). Nothing appends
        between the two: the run's one appending thread is here. The image
        is written ``IMAGE_SAMPLES`` times at the same position and its
        time is their median, so that one stall of a shared machine is not
        read as growth."""
        self.sample(force=True)
        started = time.monotonic()
        self.p.flush()
        flushed = time.monotonic()
        images = []
        for _ in range(IMAGE_SAMPLES):
            begun = time.monotonic()
            self.p.snapshot()
            images.append(time.monotonic() - begun)
        image_seconds = statistics.median(images)
        state = self.p.state
        return {
            "operations": done,
            "seconds": round(elapsed, 3),
            "rss_bytes": rss_bytes(),
            "image_bytes": len(state.to_image()),
            "snapshot_seconds": round(flushed - started + image_seconds, 4),
            "snapshot_flush_seconds": round(flushed - started, 4),
            "snapshot_image_seconds": round(image_seconds, 4),
            "open_orders": state.order_count,
            "retired_ids": state.retired_id_count,
            **self.summary(),
        }
