"""The gunicorn configuration: CPU quota from fake cgroup trees, env handling."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import free_port, wait_http
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tranzit import gunicorn_conf as gc
from tranzit.config import Config

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """Only what is needed to import tranzit from this checkout, plus `extra`."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    env.update(extra)
    return env


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def no_proc(tmp_path: Path) -> Path:
    return tmp_path / "no-proc-self-cgroup"


def test_v2_quota(tmp_path: Path, no_proc: Path) -> None:
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert gc.cgroup_cpu_limit(tmp_path, no_proc) == 1.5
    assert gc.cpu_count(tmp_path, no_proc, affinity=64) == 2


def test_v2_unlimited_falls_back_to_affinity(tmp_path: Path, no_proc: Path) -> None:
    write(tmp_path / "cpu.max", "max 100000\n")
    assert gc.cgroup_cpu_limit(tmp_path, no_proc) is None
    assert gc.cpu_count(tmp_path, no_proc, affinity=3) == 3


def test_v2_nested_cgroup_of_this_process(tmp_path: Path) -> None:
    # Outside a cgroup namespace the process's own cgroup holds the limit.
    write(tmp_path / "cpu.max", "max 100000\n")
    write(tmp_path / "system.slice" / "app.scope" / "cpu.max", "50000 100000\n")
    proc = tmp_path / "proc-self-cgroup"
    write(proc, "0::/system.slice/app.scope\n")
    assert gc.cgroup_cpu_limit(tmp_path, proc) == 0.5
    assert gc.cpu_count(tmp_path, proc, affinity=8) == 1


@pytest.mark.parametrize("controller", ["cpu", "cpu,cpuacct"])
def test_v1_quota(tmp_path: Path, no_proc: Path, controller: str) -> None:
    write(tmp_path / controller / "cpu.cfs_quota_us", "300000\n")
    write(tmp_path / controller / "cpu.cfs_period_us", "100000\n")
    assert gc.cgroup_cpu_limit(tmp_path, no_proc) == 3.0
    assert gc.cpu_count(tmp_path, no_proc, affinity=16) == 3


def test_v1_unlimited(tmp_path: Path, no_proc: Path) -> None:
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert gc.cgroup_cpu_limit(tmp_path, no_proc) is None
    assert gc.cpu_count(tmp_path, no_proc, affinity=2) == 2


def test_quota_above_cpu_set_is_capped(tmp_path: Path, no_proc: Path) -> None:
    write(tmp_path / "cpu.max", "800000 100000\n")
    assert gc.cpu_count(tmp_path, no_proc, affinity=2) == 2


@pytest.mark.parametrize("garbage", ["", "nonsense", "100000", "-5 100000", "1 0"])
def test_unreadable_quota_is_no_quota(tmp_path: Path, no_proc: Path, garbage: str) -> None:
    write(tmp_path / "cpu.max", garbage)
    assert gc.cgroup_cpu_limit(tmp_path, no_proc) is None


def test_no_cgroup_files(tmp_path: Path, no_proc: Path) -> None:
    assert gc.cgroup_cpu_limit(tmp_path, no_proc) is None
    assert gc.cpu_count(tmp_path, no_proc, affinity=0) == 1


def test_web_concurrency_wins() -> None:
    assert gc.workers_from_env({"WEB_CONCURRENCY": "5"}, cpus=2) == 5
    assert gc.workers_from_env({"WEB_CONCURRENCY": " "}, cpus=2) == 2
    assert gc.workers_from_env({}, cpus=3) == 3


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_web_concurrency_is_an_error(bad: str) -> None:
    with pytest.raises(ValueError, match="WEB_CONCURRENCY: expected a positive integer"):
        gc.workers_from_env({"WEB_CONCURRENCY": bad}, cpus=2)


def test_worker_class_follows_uvloop() -> None:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        expected = "aiohttp.worker.GunicornWebWorker"
    else:
        expected = "aiohttp.worker.GunicornUVLoopWebWorker"
    assert gc.worker_class_name() == expected


def load_settings(env: dict[str, str]) -> dict[str, object]:
    """Import the module in a fresh interpreter with exactly `env`, as gunicorn would."""
    code = (
        "import json, tranzit.gunicorn_conf as c;"
        "print(json.dumps({k: getattr(c, k) for k in ("
        "'bind','workers','worker_class','graceful_timeout','keepalive','accesslog',"
        "'timeout','logconfig_dict')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        raise AssertionError(out.stderr)
    return dict(json.loads(out.stdout))


def test_module_defaults() -> None:
    settings = load_settings({})
    assert settings["bind"] == ["127.0.0.1:3000"]
    assert settings["accesslog"] is None
    assert settings["graceful_timeout"] == 10
    assert settings["keepalive"] == 75
    # Below the compose files' stop_grace_period (15 s).
    assert isinstance(settings["graceful_timeout"], int) and settings["graceful_timeout"] < 15
    assert isinstance(settings["workers"], int) and settings["workers"] >= 1


def test_module_reads_environment() -> None:
    settings = load_settings(
        {
            "TRANZIT_HTTP_HOST": "0.0.0.0",
            "TRANZIT_HTTP_PORT": "8000",
            "WEB_CONCURRENCY": "3",
            "GUNICORN_ACCESS_LOG": "true",
            "GUNICORN_GRACEFUL_TIMEOUT": "4",
        }
    )
    assert settings["bind"] == ["0.0.0.0:8000"]
    assert settings["workers"] == 3
    assert settings["accesslog"] == "-"
    assert settings["graceful_timeout"] == 4


def test_debug_turns_the_access_log_on() -> None:
    assert load_settings({"TRANZIT_LOG_LEVEL": "debug"})["accesslog"] == "-"
    assert load_settings({"TRANZIT_LOG_LEVEL": "info"})["accesslog"] is None


def test_log_format_reaches_gunicorns_loggers() -> None:
    config = load_settings({"TRANZIT_LOG_FORMAT": "json"})["logconfig_dict"]
    assert isinstance(config, dict)
    assert config["formatters"]["tranzit"] == {"()": "tranzit.logs.JsonFormatter"}
    for name in ("gunicorn.error", "gunicorn.access"):
        assert config["loggers"][name]["propagate"] is False  # each line once


def test_no_forwarded_allow_ips() -> None:
    """aiohttp's worker never reads it: trust comes from trusted_proxies."""
    assert not hasattr(gc, "forwarded_allow_ips")


@pytest.mark.parametrize(
    ("workers", "broadcast_url", "refused"),
    [(1, None, False), (2, None, True), (4, "redis://redis:6379/0", False)],
)
def test_websocket_refusal(workers: int, broadcast_url: str | None, refused: bool) -> None:
    reason = gc.websocket_refusal(workers, Config(broadcast_url=broadcast_url))
    assert (reason is not None) == refused
    if reason is not None:
        assert "\n" not in reason and f"{workers} gunicorn workers" in reason
        for remedy in ("TRANZIT_BROADCAST_URL", "WEB_CONCURRENCY=1", "tranzit serve ws"):
            assert remedy in reason


def test_ipv6_bind_is_bracketed() -> None:
    assert load_settings({"TRANZIT_HTTP_HOST": "::"})["bind"] == ["[::]:3000"]


def test_gunicorn_accepts_the_module() -> None:
    """gunicorn itself loads the file and reports the values it will use."""
    pytest.importorskip("gunicorn")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:tranzit.gunicorn_conf",
            "--print-config",
            "tranzit.app:gunicorn_app",
        ],
        env=clean_env(WEB_CONCURRENCY="2", TRANZIT_HTTP_PORT="3999"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = {
        line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip()
        for line in out.stdout.splitlines()
        if "=" in line
    }
    assert lines["workers"] == "2"
    assert lines["bind"] == "['127.0.0.1:3999']"
    assert lines["worker_class"].startswith("aiohttp.worker.Gunicorn")


# -- several workers without a broadcast_url --------------------------------------


@contextmanager
def gunicorn(project: Path, log: Path, workers: int) -> Iterator[int]:
    """``tranzit serve http``'s gunicorn on a free port; its output goes to ``log``."""
    pytest.importorskip("gunicorn")
    port = free_port()
    env = clean_env(
        TRANZIT_PROJECT_DIR=str(project), TRANZIT_HTTP_PORT=str(port), WEB_CONCURRENCY=str(workers)
    )
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:tranzit.gunicorn_conf"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "tranzit.app:gunicorn_app"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_several_workers_without_broadcast_refuse_websockets(tmp_path: Path) -> None:
    with gunicorn(tmp_path, tmp_path / "gunicorn.log", workers=2) as port:
        for _ in range(6):  # new connections: both workers answer some
            with pytest.raises(InvalidStatus) as info:
                async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5):
                    pass
            response = info.value.response
            assert response.status_code == 503
            body = response.body.decode()
            assert body.count("\n") == 1 and "TRANZIT_BROADCAST_URL" in body
            assert "2 gunicorn workers" in body
    warnings = [
        line for line in (tmp_path / "gunicorn.log").read_text().splitlines() if "WARNING" in line
    ]
    assert len(warnings) == 1 and "websockets are not served at /ws" in warnings[0]


async def test_one_worker_serves_websockets(tmp_path: Path) -> None:
    with gunicorn(tmp_path, tmp_path / "gunicorn.log", workers=1) as port:
        async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as client:
            await client.send("no_such_rule|")
            assert "no_such_rule" in str(await asyncio.wait_for(client.recv(), 5))
    assert "websockets are not served" not in (tmp_path / "gunicorn.log").read_text()
