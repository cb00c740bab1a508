"""Shared fixtures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import OLD_PROJECT, running


@pytest.fixture
def old_project_server() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """``tranzit run`` on the contract's example project, on free ports."""
    with running([sys.executable, "-m", "tranzit", "run", "--project", str(OLD_PROJECT)]) as server:
        yield server
