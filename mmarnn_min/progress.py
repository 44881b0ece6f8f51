"""Progress of long loops on stderr (training steps, frames through MMA, videos decoded)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class ProgressLine:
    """``update(done)`` shows done/total, the rate and the seconds left. On a terminal the
    line is redrawn in place; in a log file or a pipe a line is written at most every
    ``every`` seconds, and at the end."""

    def __init__(self, label: str, total: int, unit: str = "steps", every: float = 10.0) -> None:
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.start = self.last = time.perf_counter()
        self.redraw = sys.stderr.isatty()

    def update(self, done: int, note: str = "") -> str:
        now = time.perf_counter()
        rate = done / max(now - self.start, 1e-9)
        line = (f"{self.label}: {done}/{self.total} {self.unit}, {rate:,.1f} {self.unit}/s, "
                f"{(self.total - done) / max(rate, 1e-9):4.0f} s left{'  ' + note if note else ''}")
        finished = done >= self.total
        if self.redraw:
            print("\r" + line, end="\n" if finished else "", file=sys.stderr, flush=True)
        elif finished or now - self.last >= self.every:
            print(line, file=sys.stderr, flush=True)
            self.last = now
        return line


def frame_progress(label: str, log: Callable[[str], None] | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for frames (a ``ProgressLine`` on stderr) that, at
    the end, hands a summary line to ``log`` when one is given."""
    line: ProgressLine | None = None

    def progress(done: int, total: int) -> None:
        nonlocal line
        line = line or ProgressLine(label, total, "frames")
        line.update(done)
        if done == total and log is not None:
            seconds = time.perf_counter() - line.start
            log(f"{label}: {total} frames in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} frames/s)")

    return progress
