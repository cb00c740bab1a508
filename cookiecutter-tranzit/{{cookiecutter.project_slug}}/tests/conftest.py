"""Fixtures for this project's tests: a real server on 127.0.0.1, one per test."""

{% if cookiecutter.database == "postgres" -%}
import contextlib
import os
{% endif -%}
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
from tranzit.testing import {% if cookiecutter.database == "postgres" %}DatabaseUnavailable, database, {% endif %}project_client

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
{%- if cookiecutter.database == "postgres" %}


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A new database for one test, with migrations/ applied; dropped after it.

    ``tranzit.testing.database`` makes it on TRANZIT_TEST_DATABASE_URL, or on a
    Postgres of its own, started from the local server binaries (initdb, pg_ctl).
    With neither, the test is skipped, saying why; in CI (``CI=true``) it fails.
    """
    async with contextlib.AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(database(PROJECT_DIR))
        except DatabaseUnavailable as exc:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(str(exc))
            pytest.skip(str(exc))
        yield url
{%- endif %}


@pytest.fixture
{%- if cookiecutter.database == "postgres" %}
async def client(database_url: str) -> AsyncIterator[TestClient]:
    """An aiohttp test client for the project, as ``tranzit run`` would serve it,
    on a database of its own."""
    async with project_client(PROJECT_DIR, database_url=database_url) as client:
        yield client
{%- else %}
async def client() -> AsyncIterator[TestClient]:
    """An aiohttp test client for the project, as ``tranzit run`` would serve it."""
    async with project_client(PROJECT_DIR) as client:
        yield client
{%- endif %}
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
