"""What the numbers were measured on: machine, versions, command, load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import proc

PACKAGES = (
    "tranzit",
    "aiohttp",
    "uvloop",
    "gunicorn",
    "uvicorn",
    "httptools",
    "starlette",
    "websockets",
    "matplotlib",
)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=proc.ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (
        (out.stdout or out.stderr).strip().splitlines()[0]
        if (out.stdout or out.stderr).strip()
        else "unknown"
    )


def describe(argv: list[str]) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m bench" + ("" if not argv else " " + " ".join(argv)),
        "machine": {
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(),
            "python": sys.version.split()[0],
            "pinning": "server on CPU 0, load generator on CPU 1 (taskset)"
            if proc.pinning_available()
            else "none (taskset or a second CPU missing)",
        },
        "versions": {**versions, "wrk": _run(["wrk", "-v"]).split(" [")[0]},
        "git_commit": _run(["git", "rev-parse", "--short", "HEAD"]),
    }
