"""Host validation (DNS rebinding): ``allowed_hosts`` on both endpoints, real servers."""

from __future__ import annotations

import asyncio

import pytest
from support import OLD_PROJECT

import tranzit
from tranzit.app import create_app, create_ws_app, host_checker
from tranzit.config import Config


def test_default_is_localhost_and_the_bound_addresses() -> None:
    allowed = host_checker(Config(http_host="10.1.2.3", ws_host="0.0.0.0"))
    assert allowed is not None
    for host in ("localhost", "localhost:3000", "127.0.0.1:19719", "[::1]:3000", "LOCALHOST."):
        assert allowed(host), host
    assert allowed("10.1.2.3:3000")
    for host in ("evil.example", "evil.example:3000", "0.0.0.0", "localhost.evil.example", ""):
        assert not allowed(host), host


def test_domains_star_and_ports() -> None:
    allowed = host_checker(Config(allowed_hosts=(".example.com", "shop.test:8080")))
    assert allowed is not None
    for host in ("example.com", "www.example.com:443", "a.b.example.com", "shop.test"):
        assert allowed(host), host
    for host in ("badexample.com", "example.com.evil", "localhost", "www.shop.test"):
        assert not allowed(host), host
    assert host_checker(Config(allowed_hosts=("*",))) is None


async def raw(port: int, host: str, path: str = "/", upgrade: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = ""
    if upgrade:
        extra = (
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Origin: http://{host}\r\n"
        )
    else:
        extra = "Connection: close\r\n"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    await writer.wait_closed()
    return status_line


@pytest.mark.parametrize("kind", ["http", "standalone"])
async def test_rebinding_host_is_refused_on_both_endpoints(kind: str) -> None:
    from aiohttp.test_utils import TestServer

    config, project = tranzit.load(OLD_PROJECT, environ={}, required=False)
    app = create_app(config, project) if kind == "http" else create_ws_app(config, project)
    ws_path = "/ws" if kind == "http" else "/"
    async with TestServer(app, host="127.0.0.1") as server:
        port = server.port
        assert port is not None
        # A page of a rebinding domain: its own Host and a matching Origin.
        assert b" 400 " in await raw(port, "evil.example", ws_path, upgrade=True)
        assert b" 101 " in await raw(port, f"127.0.0.1:{port}", ws_path, upgrade=True)
        assert b" 101 " in await raw(port, f"localhost:{port}", ws_path, upgrade=True)
        if kind == "http":
            assert b" 400 " in await raw(port, "evil.example:80", "/camel")
            assert b" 200 " in await raw(port, f"localhost:{port}", "/camel")
        # Probes call these by a service name or an address.
        assert b" 200 " in await raw(port, "web:3000", "/healthz")
        assert b" 200 " in await raw(port, "10.0.0.7:3000", "/readyz")


async def test_allowed_hosts_setting_is_applied() -> None:
    from aiohttp.test_utils import TestServer

    config, project = tranzit.load(OLD_PROJECT, environ={}, required=False)
    app = create_app(config.replace(allowed_hosts=(".example.com",)), project)
    async with TestServer(app, host="127.0.0.1") as server:
        port = server.port
        assert port is not None
        assert b" 200 " in await raw(port, "www.example.com", "/camel")
        assert b" 400 " in await raw(port, f"127.0.0.1:{port}", "/camel")
