"""A project generated from the previous template, upgraded (tranzit upgrade), run with compose.

Every request goes through nginx, the only published port. The tests share one
stack and run in file order: the last one stops the ws service.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from dockerstack import DockerEnv, Stack, image_size, login, record, run, tracked
from support import free_port

import tranzit

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

FIRST_APP = "hello"  # the template's default first_app


PREVIOUS_TEMPLATE = Path(__file__).resolve().parent.parent / "fixtures" / "template_prev"


def upgrade_to_current(root: Path) -> None:
    """``git init`` and commit the project, then ``tranzit upgrade`` it to the current template."""
    ident = ["-c", "user.name=tranzit tests", "-c", "user.email=tests@tranzit.invalid"]
    for args in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-q", "-m", "generated"]):
        run(["git", *args], cwd=root, timeout=60)
    upgraded = subprocess.run(
        [sys.executable, "-m", "tranzit", "upgrade", "--from-template", str(PREVIOUS_TEMPLATE)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    record = json.loads((root / ".tranzit-template.json").read_text())
    assert record["template_version"] == tranzit.__version__


def get(
    url_base: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw GET (http.client sends the path exactly as given: no dot-segment cleanup)."""
    host, port = url_base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def inspect(container: str) -> dict[str, object]:
    out = run(["docker", "inspect", container], timeout=30).stdout
    return dict(json.loads(out)[0])


@pytest.fixture(scope="module")
def stack(tranzit_images: DockerEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from cookiecutter.main import cookiecutter

    out = tmp_path_factory.mktemp("generated")
    # Generated at the previous template and upgraded to this one (tranzit upgrade, as a
    # user of the last release would): the stack below runs the upgraded project.
    root = Path(cookiecutter(str(PREVIOUS_TEMPLATE), no_input=True, output_dir=str(out)))
    upgrade_to_current(root)
    name = f"tztest{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **tranzit_images.env,
        "IMAGE_NAME": f"tranzit-test/{name}",
        "IMAGE_TAG": "t",
        "TRANZIT_SECRET_KEY": secrets.token_urlsafe(32),
        "TRANZIT_PUBLISH_PORT": f"127.0.0.1:{port}",
        "TRANZIT_PUBLISH_HTTPS_PORT": f"127.0.0.1:{free_port()}",
        # The scale test tells the web containers apart by their access logs.
        "GUNICORN_ACCESS_LOG": "1",
        "WEB_CONCURRENCY": "1",
    }
    try:
        with tracked(Stack(root, name, tranzit_images.compose, env, port), images=True) as stack:
            started = time.monotonic()
            stack.compose("build", timeout=900)
            record("build generated project (app + nginx targets)", time.monotonic() - started)
            record("size project app image", image_size(f"tranzit-test/{name}:t"))
            record("size project nginx image", image_size(f"tranzit-test/{name}-nginx:t"))
            started = time.monotonic()
            stack.compose(
                "up", "-d", "--wait", "--wait-timeout", "180", "--pull", "never", timeout=300
            )
            record("up -d --wait", time.monotonic() - started)
            started = time.monotonic()
            status, _, _ = get(stack.url, "/")
            record("first request after up (GET / through nginx)", time.monotonic() - started)
            assert status == 200
            yield stack
    finally:
        # Images a rebuild replaced are untagged but still labelled with the project.
        leftovers = subprocess.run(
            ["docker", "images", "-q", "--filter", f"label=com.docker.compose.project={name}"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        if leftovers:
            subprocess.run(
                ["docker", "image", "rm", "-f", *sorted(set(leftovers))],
                capture_output=True,
                timeout=120,
            )


def test_page_and_static_files_from_nginx(stack: Stack) -> None:
    status, headers, body = get(stack.url, "/")
    assert status == 200
    assert b"<html" in body.lower()

    probe = uuid.uuid4().hex
    for path in (
        f"/static/tranzit/tz.js?probe={probe}",
        f"/static/common/site.css?probe={probe}",
        f"/static/{FIRST_APP}/app.css?probe={probe}",
    ):
        status, headers, body = get(stack.url, path, {"Accept-Encoding": "gzip"})
        assert status == 200, path
        assert headers["server"] == "nginx", headers
        assert headers.get("etag"), headers
        assert "max-age=" in headers.get("cache-control", ""), headers
        assert body
    # tz.js is large enough to be compressed.
    _, headers, _ = get(stack.url, "/static/tranzit/tz.js", {"Accept-Encoding": "gzip"})
    assert headers.get("content-encoding") == "gzip", headers
    # None of them reached the web service: nginx served them from its image.
    web_logs = stack.compose("logs", "--no-color", "web").stdout
    assert "GET /" in web_logs  # the access log is on, so absence below means something
    assert probe not in web_logs


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/tranzit/..%2f..%2f..%2f..%2fetc/passwd",
        "/static/common/../../../../../etc/passwd",
        "/static/common/",
        "/static/",
        "/static/tranzit/.hidden",
    ],
)
def test_no_traversal_or_listing(stack: Stack, path: str) -> None:
    status, _, body = get(stack.url, path)
    assert status in (400, 403, 404), (path, status)
    assert b"root:" not in body
    assert b"Index of" not in body


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.nip.io", "localhost.evil.example"])
def test_nginx_closes_requests_for_other_host_names(stack: Stack, host: str) -> None:
    """The default server (DNS rebinding, scanners): closed without a reply (nginx's 444),
    while the names of ALLOWED_HOSTS are served."""
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        get(stack.url, "/", headers={"Host": host})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        get(stack.url, "/ws", headers={"Host": host, "Upgrade": "websocket"})
    status, _, _ = get(stack.url, "/", headers={"Host": "localhost"})
    assert status == 200


async def test_websocket_refused_without_a_login_and_accepted_with_one(stack: Stack) -> None:
    """The example's ``ws_connect``: the upgrade through nginx is 401 without the session."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{stack.url}/ws", origin=stack.url)
        assert refused.value.status == 401
        garbled = {"Cookie": "AIOHTTP_SESSION=gAAAAABnot-a-session"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{stack.url}/ws", origin=stack.url, headers=garbled)
        assert refused.value.status == 401
        headers = await login(session, stack.url, "ada")
        async with session.ws_connect(
            f"{stack.url}/ws", origin=stack.url, heartbeat=None, headers=headers
        ) as ws:
            await ws.send_str("join|lobby")
            texts = [(await ws.receive(timeout=10)).data for _ in range(2)]
            # The chat names members by their session (conn.user), never by what they send.
            assert "chat|lobby,*,ada joined" in texts, texts


async def test_websocket_rule_and_endless_rule(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        headers = await login(session, stack.url, "tester")
        ws = await session.ws_connect(f"{stack.url}/ws", heartbeat=None, headers=headers)
        await ws.send_str("echo|through nginx")
        reply = await ws.receive(timeout=10)
        assert reply.type == aiohttp.WSMsgType.TEXT and reply.data == "echo|through nginx"
        # The template's endless old-style rule pushes every second.
        await ws.send_str("clock|")
        pushed = [await ws.receive(timeout=5) for _ in range(3)]
        assert all(m.type == aiohttp.WSMsgType.TEXT for m in pushed)
        assert all(m.data.startswith("clock|") for m in pushed), pushed
        await ws.close()


async def test_browser_origin_is_accepted_and_foreign_origin_refused(stack: Stack) -> None:
    # A browser sends the page's own origin; nginx must pass the Host it was
    # asked for, or the ws service would see "ws:19719" and refuse the page.
    async with aiohttp.ClientSession() as session:
        headers = await login(session, stack.url, "tester")
        async with session.ws_connect(
            f"{stack.url}/ws", origin=stack.url, heartbeat=None, headers=headers
        ) as ws:
            await ws.send_str("echo|same origin")
            reply = await ws.receive(timeout=10)
            assert reply.type == aiohttp.WSMsgType.TEXT and reply.data == "echo|same origin"
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(
                f"{stack.url}/ws", origin="https://evil.example", headers=headers
            )
        assert info.value.status == 403


def test_containers_non_root_read_only_healthy(stack: Stack) -> None:
    containers = {s: stack.containers(s) for s in ("web", "ws", "nginx")}
    for service, ids in containers.items():
        assert ids, f"no {service} container"
        for cid in ids:
            info = inspect(cid)
            state = info["State"]
            assert isinstance(state, dict) and state["Health"]["Status"] == "healthy", service
            host = info["HostConfig"]
            assert isinstance(host, dict) and host["ReadonlyRootfs"] is True, service
            assert host["CapDrop"] == ["ALL"], service
            status = run(["docker", "exec", cid, "cat", "/proc/1/status"], timeout=30).stdout
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert all(uid != "0" for uid in uid_line.split()[1:]), (service, uid_line)
            touch = subprocess.run(
                ["docker", "exec", cid, "sh", "-c", "echo x > /probe"],
                capture_output=True,
                timeout=30,
            )
            assert touch.returncode != 0, f"{service}: root filesystem is writable"


def test_scale_web_reaches_both_without_restarting_nginx(stack: Stack) -> None:
    (nginx,) = stack.containers("nginx")
    nginx_started = inspect(nginx)["State"]["StartedAt"]  # type: ignore[index]
    stack.compose(
        "up", "-d", "--wait", "--pull", "never", "--no-recreate", "--scale", "web=2", timeout=300
    )
    assert len(stack.containers("web")) == 2
    probe = uuid.uuid4().hex
    seen: set[str] = set()
    deadline = time.monotonic() + 40  # nginx re-resolves "web" every 5 s
    while time.monotonic() < deadline and len(seen) < 2:
        for _ in range(10):
            assert get(stack.url, f"/?probe={probe}")[0] == 200
        logs = stack.compose("logs", "--no-color", "web").stdout
        seen = {line.split("|", 1)[0].strip() for line in logs.splitlines() if probe in line}
        time.sleep(0.5)
    assert len(seen) == 2, f"requests reached only {seen}"
    assert inspect(nginx)["State"]["StartedAt"] == nginx_started  # type: ignore[index]
    assert stack.containers("nginx") == [nginx]


async def test_code_change_and_rebuild(stack: Stack) -> None:
    marker = uuid.uuid4().hex[:10]
    assert get(stack.url, f"/changed-{marker}")[0] == 404
    routes = stack.root / "apps" / FIRST_APP / "routes.py"
    routes.write_text(
        routes.read_text()
        + f"""

from tranzit import web as _web


class _ChangedView(_web.TZView):
    async def get(self, request):
        return _web.Response(text="changed {marker}")


async def _shout(conn, text):
    return text.upper()


routes["/changed-{marker}"] = _ChangedView
ws_rules["shout"] = _shout
"""
    )
    started = time.monotonic()
    await asyncio.to_thread(stack.compose, "build", timeout=600)
    record("rebuild after a code change", time.monotonic() - started)
    await asyncio.to_thread(
        stack.compose, "up", "-d", "--wait", "--pull", "never", "--wait-timeout", "180", timeout=300
    )
    status, _, body = get(stack.url, f"/changed-{marker}")
    assert (status, body) == (200, f"changed {marker}".encode())
    async with aiohttp.ClientSession() as session:
        headers = await login(session, stack.url, "tester")
        ws = await session.ws_connect(f"{stack.url}/ws", heartbeat=None, headers=headers)
        await ws.send_str("shout|new code")
        reply = await ws.receive(timeout=10)
        assert reply.data == "shout|NEW CODE"


PROBE = """
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))
print(urllib.request.urlopen(request, timeout=10).read().decode())
"""


def addresses(container: str) -> set[str]:
    networks = inspect(container)["NetworkSettings"]["Networks"]  # type: ignore[index]
    return {net["IPAddress"] for net in networks.values()}


async def test_client_address_and_scheme_through_nginx(stack: Stack) -> None:
    """web and ws trust nginx (TRANZIT_TRUSTED_PROXIES=nginx): views and rules see the
    client's address and nginx's scheme; no other container can pass itself off as nginx."""
    marker = uuid.uuid4().hex[:10]
    routes = stack.root / "apps" / FIRST_APP / "routes.py"
    routes.write_text(
        routes.read_text()
        + f"""

import json as _json

from tranzit import web as _web


def _seen(request):
    return {{"remote": request.remote, "scheme": request.scheme, "host": request.host}}


class _WhoAmI(_web.TZView):
    async def get(self, request):
        return _web.json_response(_seen(request))


async def _whoami(conn):
    return _json.dumps(_seen(conn.request))


routes["/whoami-{marker}"] = _WhoAmI
ws_rules["whoami"] = _whoami
"""
    )
    await asyncio.to_thread(stack.compose, "build", timeout=600)
    await asyncio.to_thread(
        stack.compose, "up", "-d", "--wait", "--pull", "never", "--wait-timeout", "180", timeout=300
    )
    (nginx,) = stack.containers("nginx")
    proxies = addresses(nginx)
    path = f"/whoami-{marker}"

    # From this machine through nginx, with spoofed headers that nginx overrides.
    spoof = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    status, _, body = get(stack.url, path, spoof)
    assert status == 200, body
    seen = json.loads(body)
    assert seen["scheme"] == "http" and seen["host"] == stack.url.removeprefix("http://")
    assert seen["remote"] not in proxies | {"203.0.113.7"}, (seen, proxies)
    # ... and it is the address nginx itself saw: the client, as nginx's access log says.
    logged = [
        line.split("|", 1)[1].split()[0]
        for line in stack.compose("logs", "--no-color", "nginx").stdout.splitlines()
        if path in line
    ]
    assert logged == [seen["remote"]], (logged, seen)
    # The websocket through nginx (the example's /ws wants a logged-in session).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(
            f"{stack.url}/login", data={"name": "probe"}, allow_redirects=False
        ) as resp:
            assert resp.status == 303, await resp.text()
        async with session.ws_connect(f"{stack.url}/ws", origin=stack.url, heartbeat=None) as ws:
            await ws.send_str("whoami|")
            reply = await ws.receive(timeout=10)
            assert reply.type == aiohttp.WSMsgType.TEXT, reply
            assert json.loads(reply.data.partition("|")[2]) == seen

    # A request from nginx's own address with X-Forwarded-Proto: believed.
    (web, *_) = stack.containers("web")
    target = f"http://{sorted(addresses(web))[0]}:3000{path}"
    forwarded = {**spoof, "Host": "localhost", "X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
    from_nginx = run(
        [
            *("docker", "run", "--rm", "--network", f"container:{nginx}"),
            *("--entrypoint", "/opt/venv/bin/python", f"{stack.env['IMAGE_NAME']}:t"),
            *("-c", PROBE, target, json.dumps(forwarded)),
        ],
        timeout=60,
    ).stdout
    assert json.loads(from_nginx) == {
        "remote": "203.0.113.7",
        "scheme": "https",
        "host": "localhost",
    }
    # The same headers from the ws container: not a trusted proxy, so not believed.
    (ws_container, *_) = stack.containers("ws")
    from_ws = run(
        [
            "docker",
            "exec",
            ws_container,
            "/opt/venv/bin/python",
            "-c",
            PROBE,
            target,
            json.dumps(forwarded),
        ],
        timeout=60,
    ).stdout
    assert json.loads(from_ws) == {
        "remote": sorted(addresses(ws_container))[0],
        "scheme": "http",
        "host": "localhost",
    }


async def test_stop_ws_closes_clients_with_1001_quickly(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        headers = await login(session, stack.url, "tester")
        ws = await session.ws_connect(f"{stack.url}/ws", heartbeat=None, headers=headers)
        await ws.send_str("clock|")
        first = await ws.receive(timeout=5)
        assert first.type == aiohttp.WSMsgType.TEXT

        started = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(stack.compose, "stop", "ws"))
        close_code = None
        for _ in range(100):  # bounded: clock pushes one message a second
            message = await ws.receive(timeout=10)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                close_code = ws.close_code
                break
        closed_after = time.monotonic() - started
        await stopping
        stop_time = time.monotonic() - started
    record("ws client close after `compose stop ws`", closed_after)
    record("`docker compose stop ws`", stop_time)
    assert close_code == 1001
    assert stop_time < 5.0
