"""Fixtures for this project's tests: a real server on 127.0.0.1, one per test."""

{% if cookiecutter.include_example == "yes" -%}
from collections.abc import AsyncIterator, Awaitable, Callable
{%- else -%}
from collections.abc import AsyncIterator
{%- endif %}
from pathlib import Path

{% if cookiecutter.include_example == "yes" -%}
import aiohttp
{% endif -%}
import pytest
from aiohttp.test_utils import TestClient
from tranzit.testing import project_client

PROJECT_DIR = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # The tests are async: without their plugin pytest would fail each one with
    # "async def functions are not natively supported"; say what to install instead.
    if not config.pluginmanager.hasplugin("asyncio"):
        raise pytest.UsageError(
            "these tests need pytest-asyncio: pip install -r requirements-dev.txt"
        )
    # aiohttp-session keeps its session under a plain string key, which aiohttp warns
    # about on every request: aiohttp-session's to change, not this project's.
    config.addinivalue_line(
        "filterwarnings", "ignore:It is recommended to use web.RequestKey:UserWarning"
    )


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    """An aiohttp test client for the project, as ``tranzit run`` would serve it."""
    async with project_client(PROJECT_DIR) as client:
        yield client
{%- if cookiecutter.include_example == "yes" %}


@pytest.fixture
async def login(
    client: TestClient,
) -> AsyncIterator[Callable[[str], Awaitable[aiohttp.ClientSession]]]:
    """``alice = await login("alice")``: a client with its own cookies, logged in as alice.

    ``await alice.ws_connect(client.make_url("/ws"))`` then opens alice's websocket.
    """
    sessions = []

    async def log_in(name: str) -> aiohttp.ClientSession:
        # unsafe: keep cookies for an IP address (127.0.0.1), as a browser does.
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(session)
        async with session.post(client.make_url("/login"), data={"name": name}) as resp:
            assert resp.status == 200, await resp.text()  # the page, after the redirect
        return session

    yield log_in
    for session in sessions:
        await session.close()
{%- endif %}
