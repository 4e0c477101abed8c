"""Progress of one backbone's extraction: a tqdm bar on a terminal, log lines everywhere else.

A batch job, CI or `| tee` has no terminal to redraw a bar on, and a run there can take hours: it
gets a line every `PROGRESS_EVERY_S` seconds instead, with the rows done, the rate and the time left.
`--no-progress` turns the bar off; the lines stay (they are what a log file needs).
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from tqdm import tqdm

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0


def duration(seconds: float) -> str:
    """`42 s`, `7 min 05 s`, `3 h 12 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """`update(rows)` after each batch; `close()` at the end (also after an error)."""

    def __init__(self, total: int, *, name: str, bar: bool = True, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.name, self.done = total, name, 0
        self.every = PROGRESS_EVERY_S if every is None else every
        self._clock = clock
        self._started = self._last = clock()
        self._bar = tqdm(total=total, unit="img", desc=name, smoothing=0.1) \
            if bar and sys.stderr.isatty() else None

    def update(self, rows: int) -> None:
        self.done += rows
        if self._bar is not None:
            self._bar.update(rows)
        elif self._clock() - self._last >= self.every or self.done >= self.total:
            self._last = self._clock()
            log.info("%s", self.line())

    def line(self) -> str:
        """`sface: 1200 of 6000 rows (20%), 14.8 images/s, about 5 min 24 s left`."""
        elapsed = self._clock() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f"about {duration((self.total - self.done) / rate)} left" if rate > 0 else "time left unknown"
        return (f"{self.name}: {self.done} of {self.total} rows ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:.1f} images/s, {left if self.done < self.total else 'done'}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
