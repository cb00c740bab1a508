"""An app's hooks (``setup(app)``, ``ws_connect``), websocket authentication and safe errors.

Each test writes a small project, serves it for real on 127.0.0.1 (the HTTP app
with ``ws_path``, and the websocket-port app), and talks to it with independent
clients: aiohttp's HTTP client and the ``websockets`` library.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import websockets
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import write_project
from websockets.exceptions import InvalidStatus

import tranzit
from tranzit.app import create_app, create_ws_app
from tranzit.auth import SIGNER
from tranzit.errors import AppLoadError

SECRET = "k3Jq9-vX2pLm8RtZ4wYb7NcF1sHd6GaE0uQi5oTj"

ROUTES = """
from aiohttp import web

from tranzit import RuleError
from tranzit.app import ROLE
from tranzit.auth import issue_token, token_identity

POOL = web.AppKey("pool", dict)
EVENTS = []


async def pool_ctx(app):
    app[POOL]["open"] = True
    EVENTS.append("open")
    yield
    EVENTS.append("closed")


@web.middleware
async def stamp(request, handler):
    EVENTS.append(("middleware", request.path))
    response = await handler(request)
    if not response.prepared:
        response.headers["X-Stamp"] = "set by setup(app)"
    return response


def setup(app):
    EVENTS.append(app[ROLE])
    app[POOL] = {}
    app.cleanup_ctx.append(pool_ctx)
    app.middlewares.append(stamp)


async def token(request):
    return web.json_response({"token": issue_token(request, request.query["user"])})


async def pool(request):
    return web.json_response(request.app[POOL])


async def crash(request):
    raise KeyError("db_password")


routes = {"/token": token, "/pool": pool, "/crash": crash}

ws_connect = token_identity()


def whoami(conn):
    return conn.user


def secret(conn):
    raise KeyError("db_password")


def forbidden(conn):
    raise RuleError("not your room", code="forbidden")


ws_rules = {"whoami": whoami, "secret": secret, "forbidden": forbidden}
"""

SESSION_ROUTES = """
import aiohttp_session
from aiohttp import web

from tranzit.auth import session_identity


async def login(request):
    session = await aiohttp_session.new_session(request)
    session["user"] = request.query["name"]
    return web.Response(text="hello")


routes = {"/login": login}
ws_connect = session_identity("user")


def whoami(conn):
    return conn.user


ws_rules = {"whoami": whoami}
"""


Served = dict[str, TestServer]
Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """``await serve(apps, **settings)``: both apps of a fresh project, keyed "http" and "ws"."""
    servers: list[TestServer] = []
    count = 0

    async def start(apps: dict[str, str], **settings: Any) -> Served:
        nonlocal count
        count += 1
        root = write_project(tmp_path / f"p{count}", apps)
        config, project = tranzit.load(root, environ={}, **settings)
        pair = {
            "http": TestServer(create_app(config, project), host="127.0.0.1"),
            "ws": TestServer(create_ws_app(config, project), host="127.0.0.1"),
        }
        for server in pair.values():
            await server.start_server()
            servers.append(server)
        return pair

    yield start
    for server in reversed(servers):
        await server.close()


def ws_url(served: Served, endpoint: str, query: str = "") -> str:
    server = served[endpoint]
    path = "/ws" if endpoint == "http" else "/"
    return f"ws://127.0.0.1:{server.port}{path}{query}"


async def get(served: Served, path: str) -> tuple[int, dict[str, str], str]:
    url = f"http://127.0.0.1:{served['http'].port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def call(url: str, message: str, **connect: Any) -> str:
    async with websockets.connect(url, open_timeout=5, **connect) as ws:
        await ws.send(message)
        reply = await ws.recv()
        assert isinstance(reply, str)
        return reply


async def refused_status(url: str, **connect: Any) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url, open_timeout=5, **connect):
            pass
    response = refused.value.response
    return response.status_code, response.body.decode()


ENDPOINTS = pytest.mark.parametrize("endpoint", ["http", "ws"])


# -- setup(app) -------------------------------------------------------------------


async def test_setup_runs_for_every_app_tranzit_builds(serve: Serve) -> None:
    served = await serve({"chat": ROUTES})
    status, headers, body = await get(served, "/pool")
    assert (status, json.loads(body)) == (200, {"open": True})  # cleanup_ctx ran at start
    assert headers["X-Stamp"] == "set by setup(app)"  # its middleware is on the app
    import apps.chat.routes as routes  # the project's module, imported by tranzit

    # The websocket port's app has them too: its middleware sees the upgrade request.
    await refused_status(ws_url(served, "ws", "room"))
    assert routes.EVENTS == [
        "http",  # setup(app), for each application: it knows which one it is
        "ws",
        "open",
        "open",
        ("middleware", "/pool"),
        ("middleware", "/room"),
    ]
    for server in served.values():
        await server.close()
    assert routes.EVENTS[-2:] == ["closed", "closed"]  # and its clean-up ran at the end


def test_setup_problems_are_one_line_load_errors(tmp_path: Path) -> None:
    root = write_project(tmp_path / "a", {"a": "async def setup(app):\n    pass\n"})
    with pytest.raises(AppLoadError, match=r"setup\(app\) must be a plain function"):
        tranzit.load(root, environ={})
    root = write_project(tmp_path / "b", {"b": "def setup(app):\n    app['x'] = 1 / 0\n"})
    config, project = tranzit.load(root, environ={})
    with pytest.raises(AppLoadError) as failed:
        create_app(config, project)
    assert re.search(
        r"app 'b': setup\(app\) failed at .*routes\.py:2: ZeroDivisionError", str(failed.value)
    )


def test_two_apps_with_a_connect_hook_are_refused(tmp_path: Path) -> None:
    hook = "def ws_connect(request):\n    return 1\n"
    root = write_project(tmp_path, {"one": hook, "two": hook})
    with pytest.raises(AppLoadError, match="ws_connect is defined by both app 'one' and app 'two'"):
        tranzit.load(root, environ={})


# -- ws_connect: tokens ----------------------------------------------------------


@ENDPOINTS
async def test_token_connect_hook_refuses_then_accepts(serve: Serve, endpoint: str) -> None:
    served = await serve({"chat": ROUTES}, secret_key=SECRET)
    url = ws_url(served, endpoint)
    assert await refused_status(url) == (401, "401: a token is required\n")
    _, _, body = await get(served, "/token?user=ada")
    token = json.loads(body)["token"]
    assert await call(url + f"?token={token}", "whoami|") == "whoami|ada"
    # Clients that can set headers send it as a bearer token.
    headers = {"Authorization": f"Bearer {token}"}
    assert await call(url, "whoami|", additional_headers=headers) == "whoami|ada"


@ENDPOINTS
async def test_expired_and_tampered_tokens_are_refused(serve: Serve, endpoint: str) -> None:
    served = await serve({"chat": ROUTES}, secret_key=SECRET)
    url = ws_url(served, endpoint)
    key = served["http"].app[SIGNER].key
    now = int(time.time())
    expired = jwt.encode({"id": "ada", "iat": now - 600, "exp": now - 300}, key, "HS256")
    assert await refused_status(f"{url}?token={expired}") == (401, "401: token expired\n")
    _, _, body = await get(served, "/token?user=ada")
    token = json.loads(body)["token"]
    head, _, signature = token.split(".")
    forged_claims = jwt.utils.base64url_encode(
        json.dumps({"id": "root", "iat": now, "exp": now + 60}).encode()
    ).decode()
    for bad in (
        f"{head}.{forged_claims}.{signature}",  # someone else's identity, old signature
        jwt.encode({"id": "root", "iat": now, "exp": now + 60}, b"x" * 32, "HS256"),  # other key
        token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        "not-a-token",
    ):
        assert await refused_status(f"{url}?token={bad}") == (401, "401: invalid token\n")


async def test_tokens_from_one_replica_are_accepted_by_another(serve: Serve) -> None:
    """Same secret, separately built apps (another process, another replica): same key."""
    first = await serve({"chat": ROUTES}, secret_key=SECRET)
    second = await serve({"chat": ROUTES}, secret_key=SECRET)
    _, _, body = await get(first, "/token?user=ada")
    token = json.loads(body)["token"]
    assert await call(ws_url(second, "ws", f"?token={token}"), "whoami|") == "whoami|ada"
    other = await serve({"chat": ROUTES}, secret_key=SECRET[::-1])
    assert (await refused_status(ws_url(other, "ws", f"?token={token}")))[0] == 401


# -- ws_connect: the session cookie -----------------------------------------------


@ENDPOINTS
async def test_session_connect_hook(serve: Serve, endpoint: str) -> None:
    served = await serve({"site": SESSION_ROUTES}, secret_key=SECRET)
    url = ws_url(served, endpoint)
    assert await refused_status(url) == (401, "401: log in first\n")
    login = f"http://127.0.0.1:{served['http'].port}/login?name=grace"
    async with aiohttp.ClientSession() as session, session.get(login) as r:
        assert r.status == 200
        cookie = r.headers["Set-Cookie"].split(";", 1)[0]
    # Cookies are per host, not per port: a browser sends it to the websocket port too.
    assert await call(url, "whoami|", additional_headers={"Cookie": cookie}) == "whoami|grace"
    garbled = cookie[:-6] + "AAAAAA"
    status, _ = await refused_status(url, additional_headers={"Cookie": garbled})
    assert status == 401


# -- safe errors --------------------------------------------------------------------


@ENDPOINTS
async def test_handler_exceptions_hide_their_text_in_production(
    serve: Serve, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve({"chat": ROUTES}, secret_key=SECRET, production=True)
    _, _, body = await get(served, "/token?user=ada")
    url = ws_url(served, endpoint, f"?token={json.loads(body)['token']}")
    caplog.set_level(logging.DEBUG, logger="tranzit")
    reply = await call(url, "secret|")
    match = re.fullmatch(r"error\|handler_error,secret,internal error \[([0-9a-f]{8})\]", reply)
    assert match, reply
    assert "db_password" not in reply
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged and logged[0].levelno == logging.ERROR and logged[0].exc_info


@ENDPOINTS
async def test_handler_exceptions_show_their_text_in_development(
    serve: Serve, endpoint: str
) -> None:
    served = await serve({"chat": ROUTES})
    _, _, body = await get(served, "/token?user=ada")
    url = ws_url(served, endpoint, f"?token={json.loads(body)['token']}")
    assert await call(url, "secret|") == "error|handler_error,secret,KeyError: 'db_password'"


async def test_rule_error_is_a_deliberate_reply_without_a_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve({"chat": ROUTES}, secret_key=SECRET, production=True)
    _, _, body = await get(served, "/token?user=ada")
    url = ws_url(served, "http", f"?token={json.loads(body)['token']}")
    caplog.set_level(logging.INFO)
    assert await call(url, "forbidden|") == "error|forbidden,forbidden,not your room"
    reply = json.loads(await call(url, '{"rule": "forbidden", "args": [], "id": 7}'))
    assert reply == {
        "id": 7,
        "rule": "forbidden",
        "error": {"code": "forbidden", "message": "not your room"},
    }
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_rule_error_codes_are_short_words() -> None:
    with pytest.raises(ValueError, match="short word"):
        tranzit.RuleError("x", code="a,b")


async def test_http_500_in_production_shows_only_an_id(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve({"chat": ROUTES}, secret_key=SECRET, production=True)
    caplog.set_level(logging.ERROR, logger="tranzit")
    status, headers, body = await get(served, "/crash")
    match = re.fullmatch(r"500: Internal Server Error \[([0-9a-f]{8})\]\n", body)
    assert status == 500 and match, body
    assert headers["Content-Type"].startswith("text/plain")
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged and "GET /crash raised KeyError" in logged[0].getMessage()


async def test_http_500_in_development_shows_the_traceback(serve: Serve) -> None:
    served = await serve({"chat": ROUTES})
    status, headers, body = await get(served, "/crash")
    assert status == 500 and headers["Content-Type"].startswith("text/html")
    assert "KeyError: &#x27;db_password&#x27;" in body
    assert "Traceback (most recent call last)" in body and "routes.py" in body


# -- what a project gets told about its own code ------------------------------------


def test_import_errors_name_the_file_and_line(tmp_path: Path) -> None:
    root = write_project(tmp_path / "a", {"a": "import os\n\nroutes = {'/': missing_view}\n"})
    with pytest.raises(AppLoadError) as failed:
        tranzit.load(root, environ={})
    message = str(failed.value)
    assert "failed at apps/a/routes.py:3: NameError: name 'missing_view' is not defined" in message
    root = write_project(tmp_path / "b", {"b": "routes = {\n  '/': 1,,\n}\n"})
    with pytest.raises(AppLoadError, match=r"failed at apps/b/routes\.py:2: SyntaxError"):
        tranzit.load(root, environ={})


def test_near_miss_names_in_routes_get_a_did_you_mean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    routes = "ws_rule = {}\nroute = {}\npath_prefix = '/x'\nviews = None\nrules = None\n"
    root = write_project(tmp_path, {"a": routes})
    caplog.set_level(logging.WARNING, logger="tranzit")
    tranzit.load(root, environ={})
    warned = sorted(r.getMessage() for r in caplog.records)
    assert warned == [
        "app 'a': routes.py defines 'path_prefix', which tranzit does not read; "
        "did you mean 'PATH_PREFIX'?",
        "app 'a': routes.py defines 'route', which tranzit does not read; did you mean 'routes'?",
        "app 'a': routes.py defines 'ws_rule', which tranzit does not read; "
        "did you mean 'ws_rules'?",
    ]


async def test_app_without_hooks_has_anonymous_connections(serve: Serve) -> None:
    routes = "def whoami(conn):\n    return repr(conn.user)\n\nws_rules = {'whoami': whoami}\n"
    served = await serve({"plain": routes})
    assert await call(ws_url(served, "ws"), "whoami|") == "whoami|None"


async def test_errors_of_middlewares_get_the_same_500(serve: Serve) -> None:
    routes = ROUTES.replace(
        "def setup(app):\n",
        "@web.middleware\nasync def broken(request, handler):\n"
        "    if request.path == '/broken':\n        raise OSError('disk full')\n"
        "    return await handler(request)\n\n\ndef setup(app):\n"
        "    app.middlewares.append(broken)\n",
    )
    served = await serve({"chat": routes}, secret_key=SECRET, production=True)
    status, _, body = await get(served, "/broken")
    assert status == 500 and re.fullmatch(r"500: Internal Server Error \[[0-9a-f]{8}\]\n", body)


def test_a_default_app_runs_no_middleware(tmp_path: Path) -> None:
    """The Host check and the error pages wrap the app's request handler
    (``Application._handle``, a private aiohttp name pinned here): a middleware would
    bring aiohttp's own second one and cost a tenth of a hello's throughput."""
    assert callable(vars(web.Application).get("_handle")), "aiohttp renamed Application._handle"
    root = write_project(tmp_path, {"a": "routes = {}\n"})
    # sessions: off (other tests of this process imported aiohttp_session: "auto" is on)
    config, project = tranzit.load(root, environ={}, sessions=False)
    assert list(create_app(config, project).middlewares) == []
    assert list(create_ws_app(config, project).middlewares) == []
