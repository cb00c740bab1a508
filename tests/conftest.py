"""Shared fixtures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import OLD_PROJECT, clean_env, free_port, wait_http


@pytest.fixture
def old_project_server() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """``tranzit run`` on the contract's example project, on free ports."""
    http, ws = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tranzit", "run", "--project", str(OLD_PROJECT)],
        env=clean_env(TRANZIT_HTTP_PORT=str(http), TRANZIT_WS_PORT=str(ws)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{http}/healthz", proc=proc)
        yield proc, http, ws
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
