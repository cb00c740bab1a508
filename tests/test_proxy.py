"""``trusted_proxies``: the client's address, scheme and host behind a proxy, real servers.

The app runs on 127.0.0.1; clients connect from 127.0.0.1 or from 127.0.0.2
(another loopback address, so "the client" and "the proxy" can be told apart),
directly or through a real nginx running the repository's config template.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support import clean_env, free_port

import tranzit
from tranzit import proxy
from tranzit.app import create_app
from tranzit.config import Config
from tranzit.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
NGINX_DIR = REPO / "docker" / "nginx"
CLIENT = "127.0.0.2"  # a second loopback address: Linux answers on all of 127.0.0.0/8

ROUTES = """\
import json

from aiohttp import web

PATH_PREFIX = ""
APP_STATIC_DIR = None


def seen(request):
    return {"remote": request.remote, "scheme": request.scheme, "host": request.host}


class WhoAmI(web.View):
    async def get(self):
        return web.json_response(seen(self.request))


async def whoami(conn):
    return json.dumps(seen(conn.request))


routes = {"/whoami": WhoAmI}
ws_rules = {"whoami": whoami}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("proxysite")
    (root / "server.yml").write_text("apps:\n  - proxyprobe\n")
    app = root / "apps" / "proxyprobe"
    app.mkdir(parents=True)
    (root / "apps" / "__init__.py").write_text("")
    (app / "__init__.py").write_text("")
    (app / "routes.py").write_text(ROUTES)
    return root


@asynccontextmanager
async def serve(project: Path, *trusted: str, **settings: Any) -> AsyncIterator[int]:
    """The project's app with ``trusted_proxies=trusted`` on 127.0.0.1; yields its port."""
    config, loaded = tranzit.load(project, environ={}, required=False)
    config = config.replace(trusted_proxies=trusted, allowed_hosts=("*",), **settings)
    async with TestServer(create_app(config, loaded), host="127.0.0.1") as server:
        assert server.port is not None
        yield server.port


async def whoami(
    port: int, headers: dict[str, str] | None = None, *, source: str = "127.0.0.1"
) -> dict[str, str]:
    """GET /whoami from ``source``: the app's view of remote, scheme and host."""
    url = f"http://127.0.0.1:{port}/whoami"
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def ws_whoami(
    url: str, headers: dict[str, str] | None = None, *, source: str = "127.0.0.1"
) -> dict[str, str]:
    """The same through the websocket endpoint (the rule reads its upgrade request)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=False)  # nginx's test cert
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(url, headers=headers, heartbeat=None) as ws,
    ):
        await ws.send_str("whoami|")
        reply = await ws.receive(timeout=5)
        assert reply.type == aiohttp.WSMsgType.TEXT, reply
        name, _, payload = reply.data.partition("|")
        assert name == "whoami", reply.data
        return dict(json.loads(payload))


SPOOF = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example",
}


def test_no_setting_no_middleware() -> None:
    assert proxy.proxy_middleware(Config()) is None
    assert proxy.proxy_middleware(Config(trusted_proxies=("10.0.0.1",))) is not None


async def test_trusted_peer_is_seen_through(project: Path) -> None:
    async with serve(project, "127.0.0.1") as port:
        assert await whoami(port, SPOOF) == {
            "remote": "203.0.113.7",
            "scheme": "https",
            "host": "shop.example",
        }
        # A chain: the right-most address that is not a trusted proxy is the client;
        # what the client itself put to the left is not believed.
        chain = {"X-Forwarded-For": "198.51.100.66, 203.0.113.7, 127.0.0.1"}
        assert (await whoami(port, chain))["remote"] == "203.0.113.7"
        # Without X-Forwarded-For the peer is the client (aiohttp-remotes' rule).
        assert (await whoami(port, {"X-Forwarded-Proto": "https"}))["scheme"] == "http"
        assert await whoami(port) == {
            "remote": "127.0.0.1",
            "scheme": "http",
            "host": f"127.0.0.1:{port}",
        }


async def test_untrusted_peer_cannot_spoof(project: Path) -> None:
    async with serve(project, "10.0.0.0/8") as port:
        assert await whoami(port, SPOOF) == {
            "remote": "127.0.0.1",
            "scheme": "http",
            "host": f"127.0.0.1:{port}",
        }
        # Nor with headers a trusted proxy would be refused for: no 400, direct access works.
        resp = await whoami(port, {"X-Forwarded-For": "not an address, 10.1.1.1"})
        assert resp["remote"] == "127.0.0.1"


async def test_networks_star_and_mapped_addresses(project: Path) -> None:
    async with serve(project, "127.0.0.0/30", "::1") as port:
        assert (await whoami(port, SPOOF, source=CLIENT))["remote"] == "203.0.113.7"
    async with serve(project, "127.0.0.1/32") as port:
        assert (await whoami(port, SPOOF, source=CLIENT))["remote"] == CLIENT
    async with serve(project, "*") as port:
        assert (await whoami(port, SPOOF, source=CLIENT))["scheme"] == "https"
    peers = proxy.TrustedPeers(proxy.parse_trusted_proxies(["10.0.0.0/8"]))
    assert await peers.trusts("::ffff:10.1.2.3")
    assert not await peers.trusts("::ffff:11.1.2.3")
    assert not await peers.trusts(None)  # a Unix socket


async def test_health_paths_answer_any_peer(project: Path) -> None:
    garbage = {"X-Forwarded-For": "not an address"}
    async with serve(project, "127.0.0.1") as port, aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz"):
            async with session.get(f"http://127.0.0.1:{port}{path}", headers=garbage) as resp:
                assert resp.status == 200, path
        # Elsewhere a trusted proxy sending nonsense is refused (aiohttp-remotes' 400).
        async with session.get(f"http://127.0.0.1:{port}/whoami", headers=garbage) as resp:
            assert resp.status == 400


async def test_host_name_entry(project: Path) -> None:
    async with serve(project, "localhost") as port:
        assert (await whoami(port, SPOOF))["remote"] == "203.0.113.7"
        assert (await whoami(port, SPOOF, source=CLIENT))["remote"] == CLIENT


async def test_host_name_is_resolved_again_when_an_unknown_peer_comes(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In compose nginx starts after the app: its name resolves only later.

    The system resolver cannot be told to change its answer, so the loop's
    getaddrinfo answers for ``proxy.test`` from this table; other names go through.
    """
    answers: dict[str, str | None] = {"proxy.test": None}
    lookups: list[str] = []
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: str, port: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return await real(host, port, **kwargs)
        lookups.append(host)
        address = answers[host]
        if address is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    caplog.set_level(logging.INFO, logger="tranzit")
    monkeypatch.setattr(proxy, "RESOLVE_INTERVAL", 1.0)
    async with serve(project, "proxy.test") as port:
        assert (await whoami(port, SPOOF))["remote"] == "127.0.0.1"
        assert lookups == ["proxy.test"]
        assert "trusted proxy 'proxy.test' does not resolve" in caplog.text
        answers["proxy.test"] = "127.0.0.1"  # the proxy has come up
        for _ in range(5):  # bounded: no new lookup within the interval
            assert (await whoami(port, SPOOF))["remote"] == "127.0.0.1"
        assert lookups == ["proxy.test"]
        await asyncio.sleep(1.1)
        assert (await whoami(port, SPOOF))["remote"] == "203.0.113.7"
        assert len(lookups) == 2
        assert "trusted proxies: proxy.test = 127.0.0.1" in caplog.text
        # Known now: no lookups for it; concurrent unknown peers share one.
        await asyncio.gather(*(whoami(port, SPOOF) for _ in range(3)))
        await asyncio.sleep(1.1)
        await asyncio.gather(*(whoami(port, SPOOF, source=CLIENT) for _ in range(5)))
        assert len(lookups) == 3
        # The proxy moved (a recreated container): its old address is no longer trusted.
        answers["proxy.test"] = CLIENT
        await asyncio.sleep(1.1)
        assert (await whoami(port, SPOOF, source=CLIENT))["remote"] == "203.0.113.7"
        assert (await whoami(port, SPOOF))["remote"] == "127.0.0.1"


async def test_websocket_endpoint_behind_it(project: Path) -> None:
    async with serve(project, "127.0.0.1") as port:
        url = f"http://127.0.0.1:{port}/ws"
        # The Origin check compares with the forwarded host: the page was on shop.example.
        page = {**SPOOF, "Origin": "https://shop.example"}
        assert await ws_whoami(url, page) == {
            "remote": "203.0.113.7",
            "scheme": "https",
            "host": "shop.example",
        }
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await ws_whoami(url, {**SPOOF, "Origin": f"http://127.0.0.1:{port}"})
        assert info.value.status == 403
    async with serve(project, "10.0.0.0/8") as port:
        url = f"http://127.0.0.1:{port}/ws"
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await ws_whoami(url, {**SPOOF, "Origin": "https://shop.example"})
        assert info.value.status == 403  # an untrusted peer cannot claim another host
        seen = await ws_whoami(url, {**SPOOF, "Origin": f"http://127.0.0.1:{port}"})
        assert seen["remote"] == "127.0.0.1" and seen["scheme"] == "http"


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("10.0.0.1/8", "host bits set"),
        ("300.1.2.3", "300.1.2.3"),
        ("ngi nx", "not a valid host name"),
        ("http://nginx", "http://nginx"),
        ("-nginx", "not a valid host name"),
    ],
)
def test_bad_entries_are_refused(entry: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        proxy.proxy_middleware(Config(trusted_proxies=("127.0.0.1", entry)))
    message = str(info.value)
    assert "\n" not in message and "trusted_proxies" in message, message
    assert repr(entry) in message and why in message, message
    assert "expected addresses, networks" in message, message


def test_bad_entry_is_one_line_at_start(project: Path) -> None:
    env = clean_env(
        TRANZIT_TRUSTED_PROXIES="nginx, 10.0.0.0/33",
        TRANZIT_HTTP_PORT=str(free_port()),
        TRANZIT_WS_PORT=str(free_port()),
    )
    done = subprocess.run(
        [sys.executable, "-m", "tranzit", "run", "--project", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "trusted_proxies" in lines[0] and "10.0.0.0/33" in lines[0], lines
    assert "Traceback" not in done.stderr


# -- through a real nginx ------------------------------------------------------------------


def render_nginx(tmp: Path, port: int, tls_port: int, upstream: str) -> Path:
    """docker/nginx's template filled in as its entrypoint does, with paths below ``tmp``
    and one more listener with TLS (so ``$scheme`` is ``https`` there)."""
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    values = {
        "PORT": f"127.0.0.1:{port}",
        "WEB": upstream,
        "WS": upstream,
        "RESOLVER": "127.0.0.1",
        "WS_READ_TIMEOUT": "75s",
        "MAX_BODY": "1m",
        "SERVER_NAMES": "localhost 127.0.0.1",
        "STATIC_MAX_AGE": "60",
        "WORKER_CONNECTIONS": "64",
    }
    text = (NGINX_DIR / "nginx.conf.template").read_text()
    names = "server_name ${TRANZIT_NGINX_SERVER_NAMES};"
    assert text.count(names) == 1  # the project's server block
    tls = f"listen 127.0.0.1:{tls_port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};"
    text = text.replace(names, f"{names}\n        {tls}")

    def fill(template: str) -> str:
        """Every placeholder the entrypoint fills (an unknown one is a KeyError here)."""
        return re.sub(r"\$\{TRANZIT_NGINX_(\w+)\}", lambda m: values[m.group(1)], template)

    text = fill(text)
    # The parts the entrypoint puts beside nginx.conf: plain HTTP's (TLS is added above).
    for part in (NGINX_DIR / "off").glob("*.conf.template"):
        (tmp / part.name.removesuffix(".template")).write_text(fill(part.read_text()))
    text = text.replace("/etc/tranzit-nginx/", f"{NGINX_DIR}/").replace("/tmp/nginx", str(tmp))
    if os.geteuid() == 0:  # workers would drop to "nobody", who cannot enter pytest's tmp
        text = "user root;\n" + text
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[int, int, int]]:
    """A real nginx on 127.0.0.1 in front of an app port: (app port, http port, https port)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.skip("nginx is not installed")
    app_port, port, tls_port = free_port(), free_port(), free_port()
    conf = render_nginx(tmp_path, port, tls_port, f"127.0.0.1:{app_port}")
    check = subprocess.run(
        [binary, "-t", "-c", str(conf), "-e", "stderr"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                subprocess.run(["sleep", "0.05"], check=True)
        yield app_port, port, tls_port
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@asynccontextmanager
async def serve_on(project: Path, port: int, *trusted: str) -> AsyncIterator[None]:
    config, loaded = tranzit.load(project, environ={}, required=False)
    config = config.replace(trusted_proxies=trusted, allowed_hosts=("localhost", "127.0.0.1"))
    async with TestServer(create_app(config, loaded), host="127.0.0.1", port=port):
        yield


async def get_through(url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    connector = aiohttp.TCPConnector(local_addr=(CLIENT, 0), ssl=False)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def test_through_nginx(project: Path, nginx: tuple[int, int, int]) -> None:
    app_port, port, tls_port = nginx
    async with serve_on(project, app_port, "127.0.0.1"):
        # The client is 127.0.0.2; nginx reaches the app from 127.0.0.1.
        assert await get_through(f"http://127.0.0.1:{port}/whoami") == {
            "remote": CLIENT,
            "scheme": "http",
            "host": f"127.0.0.1:{port}",
        }
        assert await get_through(f"https://localhost:{tls_port}/whoami") == {
            "remote": CLIENT,
            "scheme": "https",
            "host": f"localhost:{tls_port}",
        }
        # A client cannot spoof through nginx: it appends the real peer and sets the scheme.
        assert await get_through(f"http://127.0.0.1:{port}/whoami", SPOOF) == {
            "remote": CLIENT,
            "scheme": "http",
            "host": f"127.0.0.1:{port}",
        }
        # The websocket location: the page's own origin is accepted, the client seen.
        origin = f"https://localhost:{tls_port}"
        seen = await ws_whoami(f"{origin}/ws", {"Origin": origin}, source=CLIENT)
        assert seen == {"remote": CLIENT, "scheme": "https", "host": f"localhost:{tls_port}"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await ws_whoami(f"{origin}/ws", {"Origin": "https://evil.example"}, source=CLIENT)
        assert info.value.status == 403
    # Not trusted: the app sees nginx, as before the setting existed.
    async with serve_on(project, app_port, "10.0.0.0/8"):
        seen = await get_through(f"http://127.0.0.1:{port}/whoami", SPOOF)
        assert seen["remote"] == "127.0.0.1"
