"""The HTTP side of the app factory, served on 127.0.0.1: views, static, sessions, errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import OLD_PROJECT

from tranzit.config import Config
from tranzit.errors import AppLoadError, ConfigError
from tranzit.project import load_project
from tranzit.testing import project_app, project_client


async def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` byte for byte (no client-side normalisation of '..' or '%2e')."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    await writer.wait_closed()
    status = int(data.split(b" ", 2)[1])
    return status, data


async def test_old_project_is_served_unchanged() -> None:
    async with project_client(OLD_PROJECT) as client:
        resp = await client.get("/camel")
        assert resp.status == 200
        assert "<h1>Camel</h1>" in await resp.text()
        resp = await client.get("/static/hello/camel.html")
        assert resp.status == 200 and resp.content_type == "text/html"
        resp = await client.get("/static/common/site.css")
        assert resp.status == 200 and "color" in await resp.text()
        # an old project's own tz.js copy wins at its old URL; the framework's is beside it
        assert "old project tz.js" in await (await client.get("/static/common/tz.js")).text()
        framework_js = await client.get("/static/tranzit/tz.js")
        assert framework_js.status == 200 and "TZ" in await framework_js.text()
        assert (await client.get("/healthz")).status == 200


async def test_method_not_defined_gets_405_with_allow() -> None:
    async with project_client(OLD_PROJECT) as client:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            resp = await client.request(method, "/camel")
            assert resp.status == 405
            assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert (await client.head("/camel")).status == 200


async def test_no_directory_listing_and_no_traversal(tmp_path: Path) -> None:
    project = tmp_path / "site"
    shutil.copytree(OLD_PROJECT, project)
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", project / "common" / "static" / "leak.txt")
    os.symlink(tmp_path, project / "common" / "static" / "leakdir")
    async with project_client(project) as client:
        port = client.port
        assert port is not None
        assert (await raw_get(port, "/static/common/site.css"))[0] == 200
        for path in ["/static/common/", "/static/hello/"]:  # no listing
            status, data = await raw_get(port, path)
            assert status in (403, 404) and b"site.css" not in data and b"camel" not in data
        for path in [
            "/static/common/../../server.yml",
            "/static/common/%2e%2e/%2e%2e/server.yml",
            "/static/common/%2E%2E%2F%2E%2E%2Fserver.yml",
            "/static/common/..%2f..%2fserver.yml",
            "/static/common//etc/passwd",
            "/static/common/%2fetc%2fpasswd",
            "/static/common/leak.txt",
            "/static/common/leakdir/secret.txt",
            "/static/hello/../../../server.yml",
        ]:
            status, data = await raw_get(port, path)
            assert status == 404, (path, status)
            assert b"top secret" not in data and b"http_port" not in data, path


async def test_sessions_survive_a_restart_and_a_second_worker() -> None:
    env = {"TRANZIT_SECRET_KEY": "stable"}
    async with project_client(OLD_PROJECT, environ=env) as first:
        await first.get("/")
        resp = await first.get("/")
        assert "visits=2" in await resp.text()
        cookies = {c.key: c.value for c in first.session.cookie_jar}
    async with project_client(OLD_PROJECT, environ=env) as second:  # a new process or worker
        resp = await second.get("/", cookies=cookies)
        assert "visits=3" in await resp.text()
    async with project_client(OLD_PROJECT, environ={"TRANZIT_SECRET_KEY": "other"}) as third:
        resp = await third.get("/", cookies=cookies)
        assert "visits=1" in await resp.text()  # another secret cannot read it


def test_production_without_secret_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="secret_key: expected a secret when production"):
        project_app(OLD_PROJECT, environ={"TRANZIT_PRODUCTION": "true"})
    no_sessions = make_project(tmp_path, {"one": VIEW.format(name="one", prefix="", rule="a")})
    with pytest.raises(ConfigError, match="secret_key: expected a secret when production"):
        project_app(no_sessions, environ={"TRANZIT_PRODUCTION": "true"}, sessions=False)
    project_app(
        OLD_PROJECT,
        environ={
            "TRANZIT_PRODUCTION": "1",
            "TRANZIT_SECRET_KEY": "Zx0-vR8_qL2mN5pT7wY9aB1cD3eF4gH6iJ8kM0nP2rS",
        },
    )


def make_project(root: Path, apps: dict[str, str]) -> Path:
    (root / "apps").mkdir(parents=True)
    (root / "apps" / "__init__.py").write_text("")
    for name, source in apps.items():
        (root / "apps" / name).mkdir()
        (root / "apps" / name / "__init__.py").write_text("")
        (root / "apps" / name / "routes.py").write_text(textwrap.dedent(source))
    listing = "".join(f"  - {name}\n" for name in apps)
    (root / "server.yml").write_text(f"apps:\n{listing}")
    return root


VIEW = """
from tranzit import web

class V(web.TZView):
    async def get(self, request):
        return web.Response(text="{name}")

async def rule(*args, **kwargs):
    pass

PATH_PREFIX = "{prefix}"
routes = {{"/x": V}}
ws_rules = {{"{rule}": rule}}
"""


def test_duplicate_routes_name_both_apps(tmp_path: Path) -> None:
    root = make_project(
        tmp_path,
        {
            "one": VIEW.format(name="one", prefix="", rule="a"),
            "two": VIEW.format(name="two", prefix="", rule="b"),
        },
    )
    with pytest.raises(AppLoadError, match="route '/x' is defined by both app 'one' and app 'two'"):
        load_project(root, Config(apps=("one", "two")))


def test_duplicate_rules_name_both_apps(tmp_path: Path) -> None:
    root = make_project(
        tmp_path,
        {
            "one": VIEW.format(name="one", prefix="/1", rule="same"),
            "two": VIEW.format(name="two", prefix="/2", rule="same"),
        },
    )
    with pytest.raises(
        AppLoadError, match="websocket rule 'same' is defined by both app 'one' and app 'two'"
    ):
        load_project(root, Config(apps=("one", "two")))


def test_app_import_failure_names_the_app_and_the_error(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"broken": "import does_not_exist_anywhere\n"})
    with pytest.raises(AppLoadError) as info:
        load_project(root, Config(apps=("broken",)))
    message = str(info.value)
    assert "app 'broken'" in message
    assert "ModuleNotFoundError" in message and "does_not_exist_anywhere" in message


def test_missing_app_and_wrong_types(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"bad": "routes = ['/x']\n"})
    with pytest.raises(AppLoadError, match=r"app 'ghost'.*not found"):
        load_project(root, Config(apps=("ghost",)))
    with pytest.raises(AppLoadError, match="routes: expected a dict, found list"):
        load_project(root, Config(apps=("bad",)))


async def test_all_kinds_of_views_and_user_middlewares(tmp_path: Path) -> None:
    from aiohttp import web

    from tranzit.app import create_app

    root = make_project(
        tmp_path,
        {
            "kinds": """
            from aiohttp import web as aioweb
            from tranzit import web

            class Plain:  # the original accepted any class with the methods
                async def get(self, request):
                    return web.Response(text="plain")
                async def post(self, request):
                    return web.json_response(await request.json())

            class Modern(aioweb.View):
                async def get(self):
                    return web.Response(text="view")

            async def handler(request):
                return web.Response(text="func " + request.method)

            PATH_PREFIX = "/k"
            routes = {"/plain": Plain, "/modern": Modern, "/func": handler}
            """
        },
    )

    @web.middleware
    async def stamp(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers["X-Stamp"] = "yes"
        return response

    config = Config(apps=("kinds",))
    app = create_app(config, load_project(root, config), middlewares=[stamp])
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/k/plain")
        assert await resp.text() == "plain" and resp.headers["X-Stamp"] == "yes"
        assert await (await client.post("/k/plain", json={"a": 1})).json() == {"a": 1}
        assert (await client.delete("/k/plain")).status == 405
        assert await (await client.get("/k/modern")).text() == "view"
        assert await (await client.put("/k/func")).text() == "func PUT"


def session_middlewares(app: object) -> list[object]:
    return [m for m in app.middlewares if "aiohttp_session" in getattr(m, "__module__", "")]  # type: ignore[attr-defined]


def forget_aiohttp_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh process: nothing has imported aiohttp_session yet."""
    for name in [m for m in sys.modules if m.split(".")[0] == "aiohttp_session"]:
        monkeypatch.delitem(sys.modules, name)


def test_sessions_only_where_the_project_uses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forget_aiohttp_session(monkeypatch)
    plain = make_project(tmp_path / "plain", {"one": VIEW.format(name="one", prefix="", rule="a")})
    assert session_middlewares(project_app(plain)) == []  # no cost per request
    assert len(session_middlewares(project_app(plain, sessions=True))) == 1
    # a view that imports aiohttp_session lazily, inside a function, is found too
    lazy = make_project(
        tmp_path / "lazy",
        {
            "two": VIEW.format(name="two", prefix="", rule="b")
            + "\ndef f():\n    import aiohttp_session\n"
        },
    )
    forget_aiohttp_session(monkeypatch)
    assert len(session_middlewares(project_app(lazy))) == 1
    assert session_middlewares(project_app(lazy, sessions=False)) == []


def test_old_project_gets_sessions_in_a_fresh_process() -> None:
    code = (
        "from tranzit.testing import project_app\n"
        f"app = project_app({str(OLD_PROJECT)!r})\n"
        "print(sum('aiohttp_session' in m.__module__ for m in app.middlewares))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "1"
