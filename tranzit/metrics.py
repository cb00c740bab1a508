"""``/metrics``: a hub's counters and the process's, for Prometheus.

Nothing on the hot path touches prometheus_client: the hub bumps plain
integers (:class:`~tranzit.ws.stats.Stats`) and :class:`HubCollector` reads
them, and the hub's state, only when Prometheus scrapes. Each process (each
gunicorn worker) reports its own numbers; ``docs/metrics.md`` lists them.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import __version__
from .ws.hub import Hub
from .ws.stats import Histogram

__all__ = ["HubCollector", "metrics_handler", "metrics_registry"]


class HubCollector(Collector):
    """The ``tranzit_*`` metrics of one hub, read at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        stats = hub.stats
        connections = list(hub.connections)
        yield _labelled(
            GaugeMetricFamily("tranzit_build_info", "The tranzit version.", labels=["version"]),
            {__version__: 1},
        )
        yield GaugeMetricFamily(
            "tranzit_ws_connections", "Open websocket connections.", value=len(connections)
        )
        yield CounterMetricFamily(
            "tranzit_ws_connections_opened_total",
            "Websocket connections accepted.",
            value=stats.connections_opened,
        )
        yield CounterMetricFamily(
            "tranzit_ws_messages_in_total",
            "Messages received from websocket clients.",
            value=stats.messages_in,
        )
        yield CounterMetricFamily(
            "tranzit_ws_messages_out_total",
            "Frames handed to websocket clients' sockets.",
            value=stats.messages_out,
        )
        yield _labelled(
            CounterMetricFamily(
                "tranzit_ws_rule_calls_total", "Calls of each rule.", labels=["rule"]
            ),
            stats.rule_calls,
        )
        # Every rule called has an error series, 0 until one fails: rate() sees it start.
        yield _labelled(
            CounterMetricFamily(
                "tranzit_ws_rule_errors_total",
                "Calls of each rule that failed (handler_error).",
                labels=["rule"],
            ),
            {rule: stats.rule_errors[rule] for rule in stats.rule_calls | stats.rule_errors},
        )
        yield GaugeMetricFamily(
            "tranzit_ws_outbox_frames",
            "Frames waiting to be handed to clients' sockets, all clients together.",
            value=sum(len(conn.outbound) for conn in connections),
        )
        yield CounterMetricFamily(
            "tranzit_ws_frames_dropped_total",
            "Frames dropped for clients closed as too slow.",
            value=stats.frames_dropped,
        )
        yield CounterMetricFamily(
            "tranzit_ws_slow_closes_total",
            "Clients closed with 1013 for going over a send bound.",
            value=stats.slow_closes,
        )
        yield _labelled(
            CounterMetricFamily(
                "tranzit_ws_recoveries_total",
                "Resumes: ok replayed what was missed, gap had lost it.",
                labels=["result"],
            ),
            {"ok": stats.recoveries_ok, "gap": stats.recoveries_gap},
        )
        yield CounterMetricFamily(
            "tranzit_ws_replayed_total",
            "Group messages sent again to clients that resumed.",
            value=stats.replayed,
        )
        yield CounterMetricFamily(
            "tranzit_broadcast_publish_errors_total",
            "Publishes the broadcast backend could not carry (BroadcastUnavailable).",
            value=stats.publish_errors,
        )
        yield GaugeMetricFamily(
            "tranzit_broadcast_up",
            "1 while the broadcast backend can publish and hears the other replicas.",
            value=1 if hub.backend.healthy else 0,
        )
        yield _histogram(
            "tranzit_ws_delivery_lag_seconds",
            "Seconds from a group message's publish to its delivery here.",
            stats.lag,
        )
        yield GaugeMetricFamily(
            "tranzit_ws_draining",
            "1 while the server closes its websockets before stopping.",
            value=1 if hub.draining else 0,
        )


def _labelled(family: GaugeMetricFamily | CounterMetricFamily, values: dict[str, int]) -> Metric:
    for label, value in sorted(values.items()):
        family.add_metric([label], value)
    return family


def _histogram(name: str, documentation: str, histogram: Histogram) -> Metric:
    """``histogram`` as Prometheus has it: cumulative buckets, the last one ``+Inf``."""
    buckets: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
        seen += count
        buckets.append((repr(float(bound)), seen))  # 0.005, 1.0: as prometheus_client's own
    buckets.append(("+Inf", seen + histogram.counts[-1]))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.total)


def metrics_registry(hub: Hub) -> CollectorRegistry:
    """The hub's metrics, the process's (CPU, memory, descriptors), Python's and its GC's."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, HubCollector(hub)):
        registry.register(collector)
    return registry


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """The ``/metrics`` view: the text format, or OpenMetrics when the scraper asks for it."""

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get(hdrs.ACCEPT, ""))
        return web.Response(
            body=encode(registry), headers={"Content-Type": content_type, **_NO_STORE}
        )

    return metrics


_NO_STORE = {"Cache-Control": "no-store"}
