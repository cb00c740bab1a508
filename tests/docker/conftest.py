"""Docker stack tests: fixtures (from dockerstack.py) and reporting hooks."""

from __future__ import annotations

import pytest
from dockerstack import CURRENT_STACK, METRICS, built_project, docker_env, tranzit_images

__all__ = ["built_project", "docker_env", "tranzit_images"]


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    # On any failure, show what the containers said.
    if call.excinfo is not None and CURRENT_STACK and call.when in {"setup", "call"}:
        stack = CURRENT_STACK[-1]
        item.add_report_section(call.when, "docker compose logs", stack.logs())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if METRICS:
        terminalreporter.section("tranzit docker stack measurements")
        for name, value in METRICS.items():
            terminalreporter.write_line(f"{name:55s} {value}")
