"""The benchmark harness works: ``python -m bench --quick`` measures every workload.

This checks the harness, never speed: numbers must exist and be positive, the
JSON and the markdown must be written; how large they are is not asserted.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import IN_CI, WITHOUT_DOCKER

ROOT = Path(__file__).resolve().parent.parent
#: The workloads that need a Docker engine: left out of a run without one.
DOCKER_WORKLOADS = ("static", "broadcast", "lifecycle")
WORKLOADS = ("http_hello", "http_echo", "ws_echo", "fanout", "soak", *DOCKER_WORKLOADS)
MEASURED = [w for w in WORKLOADS if not (WITHOUT_DOCKER and w in DOCKER_WORKLOADS)]

pytestmark = [
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
    pytest.mark.timeout(420),
]


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    out = tmp_path_factory.mktemp("bench")
    docs = out / "BENCHMARKS.md"
    only = [f"--only={','.join(MEASURED)}"] if WITHOUT_DOCKER else []
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--docs", str(docs), *only],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    return done, out, docs


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x) and x > 0


def test_quick_run_exits_0_and_shows_progress(quick_run) -> None:
    done, _, _ = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    for name in MEASURED:
        assert f"] {name} done in" in done.stdout


def test_every_workload_produced_numbers(quick_run) -> None:
    done, out, _ = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    [result_file] = out.glob("run-*-quick.json")
    results = json.loads(result_file.read_text())
    w = results["workloads"]
    for name, peers in (
        ("http_hello", {"tranzit", "aiohttp", "uvicorn+starlette"}),
        ("http_echo", {"tranzit", "aiohttp", "uvicorn+starlette"}),
        ("ws_echo", {"tranzit", "tranzit 2018 handler", "aiohttp", "websockets"}),
    ):
        assert set(w[name]["peers"]) == peers
        for peer, data in w[name]["peers"].items():
            assert _positive(data["rate"]), (name, peer, data)
            assert _positive(data["latency_ms"]["50"]), (name, peer, data)
            assert data["errors"] == 0, (name, peer, data)
            assert data["runs"] and "server" in data["runs"][0]["cpu_percent"]
    fanout = w["fanout"]
    assert fanout["sizes"], fanout
    for peer in ("tranzit", "aiohttp"):
        for n in fanout["sizes"]:
            row = fanout["peers"][peer][str(n)]
            assert _positive(row["kib_per_connection"]), (peer, n, row)
            assert _positive(row["p99_ms"]) and _positive(row["server_loop_ms"]), (peer, n, row)
    soak = w["soak"]
    # Redis killed twice: some messages are refused, and every acknowledged one arrived.
    assert soak["acknowledged"] > 0 and soak["unavailable"] > 0, soak
    assert soak["members_complete"] == soak["members"] and soak["out_of_order"] == 0, soak
    assert soak["ok"], soak
    if WITHOUT_DOCKER:
        assert not set(DOCKER_WORKLOADS) & set(w), sorted(w)
        return
    docker = [w[name] for name in DOCKER_WORKLOADS]
    if any(d.get("status") == "not measured" for d in docker):
        # Only without an engine, and then all three say why.
        assert all(d["status"] == "not measured" and d["reason"] for d in docker), docker
        assert not IN_CI, f"CI=true but the Docker workloads were not measured: {docker}"
    else:
        _docker_numbers(w)
    assert results["run"]["loadavg_before"] and results["run"]["loadavg_after"]


def _docker_numbers(w: dict) -> None:
    for label in ("small", "1 MiB"):
        for peer in ("stack nginx", "bare nginx"):
            data = w["static"]["files"][label]["peers"][peer]
            assert _positive(data["rate"]) and data["errors"] == 0, (label, peer, data)
    (run,) = w["broadcast"]["runs"]
    assert "error" not in run, run
    # Every client joined and heard everything; how nginx spread 20 clients over the
    # replicas is not the harness's business (tests/docker/test_scale.py checks that).
    assert run["missing"] == 0 and sum(run["per_replica"]) >= run["clients"], run
    assert _positive(run["p99_ms"]) and _positive(run["deliveries_per_second"]), run
    life = w["lifecycle"]
    assert _positive(life["image_mb"]["runtime image"]) and _positive(life["up_wait_seconds"])
    assert _positive(life["runtime_over_base_mb"]), life
    assert _positive(life["first_request_seconds"]) and life["builds"], life
    assert life["stop"]["close_codes"] == {"1001": life["stop"]["websockets"]}, life["stop"]


def test_markdown_records_the_run(quick_run) -> None:
    done, out, docs = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    text = docs.read_text()
    assert "Quick run" in text
    assert "python -m bench --quick" in text
    assert "load average" in text
    titles = ["HTTP hello", "JSON echo", "routed echo", "Fan-out"]
    if not WITHOUT_DOCKER:
        titles += ["Static file", "Container lifecycle", "Broadcast across 3 ws replicas"]
    for title in titles:
        assert title in text, title
    assert "tranzit / aiohttp throughput" in text
    if (out / "plots" / "throughput.png").exists():
        assert "plots/throughput.png" in text
    else:
        assert "Plots were skipped" in text


def test_only_rejects_unknown_workloads() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "http_hello,nonsense"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "nonsense" in done.stderr and "http_hello" in done.stderr
