"""Shared fixtures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import OLD_PROJECT, WITHOUT_DOCKER, running


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``scripts/test.sh --no-docker``: the docker tests are deselected, whatever ``-m`` says."""
    if not WITHOUT_DOCKER:
        return
    docker = [item for item in items if item.get_closest_marker("docker")]
    if docker:
        config.hook.pytest_deselected(items=docker)
        items[:] = [item for item in items if not item.get_closest_marker("docker")]


@pytest.fixture
def old_project_server() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """``tranzit run`` on the contract's example project, on free ports."""
    with running([sys.executable, "-m", "tranzit", "run", "--project", str(OLD_PROJECT)]) as server:
        yield server
