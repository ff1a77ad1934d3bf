"""A progress line on stderr, drawn only when stderr is a terminal.

Hand-written (twenty lines) rather than a dependency such as tqdm: the
package's runtime needs nothing beyond the database drivers, and all the
line shows is a count, a rate and one extra field.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self, total: int, *, unit: str = "", stream: TextIO | None = None, every: float = 0.25
    ) -> None:
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.every = every
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, done: int, extra: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.every and done < self.total:
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        share = done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        self.stream.write(
            f"\r[{bar:<30}] {done:,}/{self.total:,} {self.unit} {rate:,.0f}/s {extra}\x1b[K"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
