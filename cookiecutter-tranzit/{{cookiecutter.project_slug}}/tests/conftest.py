"""Fixtures for this project's tests: a real server on 127.0.0.1, one per test."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from tranzit.testing import project_client

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    """An aiohttp test client for the project, as ``tranzit run`` would serve it."""
    async with project_client(PROJECT_DIR) as client:
        yield client
