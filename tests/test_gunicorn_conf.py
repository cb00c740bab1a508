"""The gunicorn configuration: CPU quota from fake cgroup trees, env handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tranzit import gunicorn_conf as gc

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
        "'forwarded_allow_ips','timeout')}))"
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
    assert settings["forwarded_allow_ips"] == "127.0.0.1"
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
            "FORWARDED_ALLOW_IPS": "*",
        }
    )
    assert settings["bind"] == ["0.0.0.0:8000"]
    assert settings["workers"] == 3
    assert settings["accesslog"] == "-"
    assert settings["graceful_timeout"] == 4
    assert settings["forwarded_allow_ips"] == "*"


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
