"""What a hub counts for ``/metrics``: plain integers, bumped on the hot path.

Nothing here takes a lock or calls into prometheus_client: a ``+= 1`` on a
slot costs a few tens of nanoseconds, and :mod:`tranzit.metrics` reads the
values only when Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Protocol

__all__ = ["LAG_BUCKETS", "Histogram", "Stats"]

#: Upper bounds (seconds) of the delivery-lag histogram's buckets.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts per bucket and a running sum, as Prometheus histograms export them."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LAG_BUCKETS) -> None:
        self.bounds = bounds
        #: One count per bound, plus the +Inf bucket (not cumulative).
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class Counted(Protocol):
    """A rule as :class:`Stats` counts its calls (:class:`~tranzit.ws.rules.Rule`)."""

    name: str
    calls: int


class Stats:
    """One hub's counters (all since the process started)."""

    __slots__ = (
        "connections_opened",
        "frames_dropped",
        "lag",
        "messages_in",
        "messages_out",
        "publish_errors",
        "recoveries_gap",
        "recoveries_ok",
        "replayed",
        "rule_errors",
        "rules",
        "slow_closes",
    )

    def __init__(self) -> None:
        self.connections_opened = 0
        #: Messages received from clients.
        self.messages_in = 0
        #: Frames handed to clients' sockets.
        self.messages_out = 0
        #: Frames dropped for clients closed as too slow.
        self.frames_dropped = 0
        #: Clients closed with 1013 for going over a send bound.
        self.slow_closes = 0
        #: The rules dispatched through this hub (each counts its own calls), and
        #: failed calls (handler_error) per rule name.
        self.rules: dict[str, Counted] = {}
        self.rule_errors: Counter[str] = Counter()
        #: Resumes that replayed what was missed, and ones that were told of a gap.
        self.recoveries_ok = 0
        self.recoveries_gap = 0
        #: Messages sent again to clients that resumed.
        self.replayed = 0
        #: Publishes that raised BroadcastUnavailable.
        self.publish_errors = 0
        #: Seconds from a group message's publish (its position's time) to its local delivery.
        self.lag = Histogram()

    @property
    def rule_calls(self) -> Counter[str]:
        """Calls per rule name (read at scrape time from the rules' own counters)."""
        return Counter({name: rule.calls for name, rule in self.rules.items() if rule.calls})
