"""A progress bar on stderr (percent, count, rate, ETA), drawn only when
stderr is a terminal and fitted to its width, resized or not.

tqdm draws it: it is small, has no dependencies of its own, and already
gets right what a hand-written bar got wrong (a line that wraps on a
narrow terminal, no ETA, a bar left behind in a log file).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm


class Progress:
    """``update(done)`` with the running total; ``finish()`` at the end.

    ``unit_scale`` turns byte counts into ``MB`` and ``MB/s``."""

    def __init__(
        self,
        total: int,
        *,
        unit: str = "",
        label: str | None = None,
        stream: TextIO | None = None,
        every: float = 0.25,
        bytes_: bool = False,
        enabled: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self._bar: tqdm[NoReturn] | None = None
        if not self.enabled:
            return  # and no import: a pipe or a log file never needs tqdm
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            desc=label,
            unit="B" if bytes_ else (unit or "it"),
            unit_scale=bytes_,
            unit_divisor=1024 if bytes_ else 1000,
            file=self.stream,
            mininterval=every,
            dynamic_ncols=True,  # re-read the width at every draw: no wrapping
            leave=False,  # a finished bar is wiped; the command's own output follows
        )

    def update(self, done: int, extra: str = "") -> None:
        if self._bar is None:
            return
        if extra:
            self._bar.set_postfix_str(extra, refresh=False)
        self._bar.update(done - self._bar.n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()

    close = finish
