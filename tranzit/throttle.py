"""Rate-limited log lines: what a client or an outage can repeat is logged now and then."""

from __future__ import annotations

import time

__all__ = ["Throttle"]


class Throttle:
    """At most ``burst`` lines per ``period`` seconds; counts the ones held back."""

    __slots__ = ("_burst", "_count", "_held", "_period", "_start")

    def __init__(self, period: float, burst: int = 1) -> None:
        self._burst, self._period = burst, period
        self._start = -period  # the first line is always due
        self._count = self._held = 0

    def allow(self) -> int | None:
        """None: hold this line back; else how many were held back before it."""
        now = time.monotonic()
        if now - self._start >= self._period:
            self._start, self._count = now, 0
        if self._count >= self._burst:
            self._held += 1
            return None
        self._count += 1
        held, self._held = self._held, 0
        return held

    def due(self) -> bool:
        """Whether a line may be logged now."""
        return self.allow() is not None
