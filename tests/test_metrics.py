"""``/metrics``: served only with ``metrics: true``, read by Prometheus' own parser.

One test runs ``tranzit run`` with ``TRANZIT_METRICS=1`` and makes calls over a
real websocket; the others serve the app in this process, to set the hub's
counters and state directly and see them in the scrape.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import SimpleNamespace

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from support import FIXTURES, clean_env, free_port, wait_http
from websockets.asyncio.client import connect

import tranzit
from tranzit.app import create_ws_app
from tranzit.testing import project_app
from tranzit.ws import HUB

WSPROJECT = FIXTURES / "wsproject"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels (sorted)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return parse(resp.read().decode())


@contextmanager
def dev_server(**env: str) -> Iterator[tuple[int, int]]:
    """``tranzit run`` of the wsproject fixture (HTTP and websocket ports, one hub)."""
    http, ws = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tranzit", "run", "--project", str(WSPROJECT)],
        env=clean_env(TRANZIT_HTTP_PORT=str(http), TRANZIT_WS_PORT=str(ws), **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{http}/healthz", proc=proc)
        yield http, ws
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_rule_calls_and_failures_are_counted_on_both_ports() -> None:
    with dev_server(TRANZIT_METRICS="1") as (http, ws):
        before = await asyncio.to_thread(scrape, http)
        async with connect(f"ws://127.0.0.1:{ws}/", open_timeout=5) as client:
            for i in range(5):
                await client.send(f"echo|{i}")
                assert await asyncio.wait_for(client.recv(), timeout=5) == f"echo|{i}"
            for _ in range(2):
                await client.send("boom|x")
                reply = await asyncio.wait_for(client.recv(), timeout=5)
                assert "handler_error" in str(reply)
            during = await asyncio.to_thread(scrape, ws)
        after = await asyncio.to_thread(scrape, http)

    assert during[("tranzit_ws_connections", ())] == 1
    assert grew(before, after, "tranzit_ws_connections_opened_total") == 1
    assert grew(before, after, "tranzit_ws_messages_in_total") == 7
    assert grew(before, after, "tranzit_ws_messages_out_total") == 7
    assert grew(before, after, "tranzit_ws_rule_calls_total", rule="echo") == 5
    assert grew(before, after, "tranzit_ws_rule_calls_total", rule="boom") == 2
    assert grew(before, after, "tranzit_ws_rule_errors_total", rule="boom") == 2
    assert after[("tranzit_ws_rule_errors_total", (("rule", "echo"),))] == 0
    assert after[("tranzit_ws_connections", ())] == 0


@asynccontextmanager
async def served(app: aiohttp.web.Application) -> AsyncIterator[int]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        assert server.port is not None
        yield server.port
    finally:
        await server.close()


async def get(port: int, path: str, **headers: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_the_scrape_reads_the_hubs_counters_and_state() -> None:
    app = project_app(WSPROJECT, metrics=True)
    hub = app[HUB]
    stats = hub.stats
    stats.messages_in = 11
    stats.frames_dropped = 3
    stats.slow_closes = 2
    stats.recoveries_ok, stats.recoveries_gap, stats.replayed = 4, 1, 9
    stats.publish_errors = 6
    stats.rules["chat.send"] = SimpleNamespace(name="chat.send", calls=7)  # type: ignore[assignment]
    stats.rule_errors["chat.send"] = 1
    for lag in (0.0005, 0.003, 0.003, 20.0):
        stats.lag.observe(lag)
    hub.draining = True
    async with served(app) as port:
        status, content_type, text = await get(port, "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain")
    samples = parse(text)
    assert samples[("tranzit_build_info", (("version", tranzit.__version__),))] == 1
    assert samples[("tranzit_ws_messages_in_total", ())] == 11
    assert samples[("tranzit_ws_frames_dropped_total", ())] == 3
    assert samples[("tranzit_ws_slow_closes_total", ())] == 2
    assert samples[("tranzit_ws_recoveries_total", (("result", "ok"),))] == 4
    assert samples[("tranzit_ws_recoveries_total", (("result", "gap"),))] == 1
    assert samples[("tranzit_ws_replayed_total", ())] == 9
    assert samples[("tranzit_broadcast_publish_errors_total", ())] == 6
    assert samples[("tranzit_broadcast_up", ())] == 1
    assert samples[("tranzit_ws_rule_calls_total", (("rule", "chat.send"),))] == 7
    assert samples[("tranzit_ws_rule_errors_total", (("rule", "chat.send"),))] == 1
    assert samples[("tranzit_ws_draining", ())] == 1
    assert samples[("tranzit_ws_connections", ())] == 0
    assert samples[("tranzit_ws_outbox_frames", ())] == 0
    # Cumulative buckets, +Inf holding all of them, and the sum.
    lag = "tranzit_ws_delivery_lag_seconds"
    assert samples[(f"{lag}_bucket", (("le", "0.001"),))] == 1
    assert samples[(f"{lag}_bucket", (("le", "0.005"),))] == 3
    assert samples[(f"{lag}_bucket", (("le", "10.0"),))] == 3
    assert samples[(f"{lag}_bucket", (("le", "+Inf"),))] == 4
    assert samples[(f"{lag}_count", ())] == 4
    assert abs(samples[(f"{lag}_sum", ())] - 20.0065) < 1e-9
    # The process collector's metrics, as every Prometheus client library names them.
    assert ("process_cpu_seconds_total", ()) in samples
    assert ("process_resident_memory_bytes", ()) in samples


async def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    async with served(project_app(WSPROJECT, metrics=True)) as port:
        status, content_type, text = await get(
            port, "/metrics", Accept="application/openmetrics-text; version=1.0.0"
        )
    assert (status, content_type.split(";")[0]) == (200, "application/openmetrics-text")
    assert text.endswith("# EOF\n")
    assert "tranzit_ws_messages_in_total 0" in text


async def test_a_scraper_calling_by_service_name_passes_the_host_check() -> None:
    app = project_app(WSPROJECT, metrics=True, allowed_hosts=("example.com",))
    async with served(app) as port:
        assert (await get(port, "/metrics", Host="web:3000"))[0] == 200
        assert (await get(port, "/", Host="web:3000"))[0] == 400


async def test_without_metrics_there_is_no_metrics_path() -> None:
    async with served(project_app(WSPROJECT)) as port:
        assert (await get(port, "/metrics"))[0] == 404
    # The websocket port serves its endpoint at every path: /metrics is no page there.
    config, project = tranzit.load(WSPROJECT, environ={}, required=False)
    async with served(create_ws_app(config, project)) as port:
        status, _, text = await get(port, "/metrics")
        assert status == 400 and "websocket" in text


async def test_the_websocket_port_serves_metrics_too() -> None:
    config, project = tranzit.load(WSPROJECT, environ={}, required=False, metrics=True)
    app = create_ws_app(config, project)
    app[HUB].stats.messages_in = 5
    async with served(app) as port:
        status, _, text = await get(port, "/metrics")
    assert status == 200
    assert parse(text)[("tranzit_ws_messages_in_total", ())] == 5
