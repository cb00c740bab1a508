"""Session cookies: the secret's rule, a slow key derivation, forged cookies as fresh sessions."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_session
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet
from support import write_project

from tranzit.config import Config
from tranzit.errors import ConfigError
from tranzit.project import Project
from tranzit.sessions import (
    KDF_SALT,
    check_secret,
    derive_key,
    secret_weakness,
    session_key,
    setup_sessions,
)
from tranzit.testing import project_client

STRONG = "Zx0-vR8_qL2mN5pT7wY9aB1cD3eF4gH6iJ8kM0nP2rS"
COOKIE = "AIOHTTP_SESSION"


def test_generated_secrets_pass_and_repetitive_ones_fail() -> None:
    for _ in range(50):
        assert secret_weakness(secrets.token_urlsafe(32)) is None
        assert secret_weakness(secrets.token_hex(32)) is None
    for weak in ("a", "a" * 64, "password" * 4, "ab" * 40, secrets.token_urlsafe(32)[:31]):
        assert secret_weakness(weak) is not None, weak


def test_production_refuses_weak_secrets_development_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigError, match=r"secret_key: expected a secret of at least 32"):
        check_secret(Config(production=True, secret_key="password" * 4))
    with pytest.raises(ConfigError, match=r"token_urlsafe\(32\)"):
        session_key(Config(production=True, secret_key="a"), Project(tmp_path))
    check_secret(Config(production=True, secret_key=STRONG))
    caplog.set_level(logging.WARNING, logger="tranzit")
    weak = "dev-" + secrets.token_hex(4)  # not warned about earlier in this process
    for _ in range(3):
        session_key(Config(secret_key=weak), Project(tmp_path))
    warnings = [r for r in caplog.records if "secret_key" in r.getMessage()]
    assert len(warnings) == 1 and "weak" in warnings[0].getMessage()
    assert weak not in warnings[0].getMessage()


def test_cookie_key_is_scrypt_of_the_secret_slow_to_guess_and_cached() -> None:
    secret = "cached-" + secrets.token_hex(8)
    start = time.perf_counter()
    key = derive_key(secret)
    first = time.perf_counter() - start
    # An independent scrypt (the standard library's) gives the same key.
    expected = hashlib.scrypt(
        secret.encode(), salt=KDF_SALT, n=2**15, r=8, p=1, maxmem=64 * 2**20, dklen=32
    )
    assert key == expected and key != hashlib.sha256(secret.encode()).digest()
    assert first >= 0.02  # each offline guess costs as much
    start = time.perf_counter()
    assert derive_key(secret) == key
    assert time.perf_counter() - start < 0.005  # once per process


async def visits(request: web.Request) -> web.Response:
    session = await aiohttp_session.get_session(request)
    session["visits"] = session.get("visits", 0) + 1
    return web.Response(text=f"visits={session['visits']}")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    setup_sessions(app, session_key(Config(secret_key=STRONG), Project(tmp_path)))
    app.router.add_get("/", visits)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def token(key: bytes, payload: bytes) -> str:
    return Fernet(base64.urlsafe_b64encode(key)).encrypt(payload).decode()


async def get(client: TestClient[web.Request, web.Application], cookie: str) -> tuple[int, str]:
    client.session.cookie_jar.clear()
    resp = await client.get("/", headers={"Cookie": f"{COOKIE}={cookie}"})
    return resp.status, await resp.text()


async def test_sessions_work_and_old_style_keys_are_not_accepted(
    client: TestClient[web.Request, web.Application],
) -> None:
    resp = await client.get("/")
    assert await resp.text() == "visits=1"
    assert await (await client.get("/")).text() == "visits=2"
    # A cookie made with the previous key, one unsalted SHA-256 of the secret.
    old_key = hashlib.sha256(STRONG.encode()).digest()
    payload = json.dumps({"created": int(time.time()), "session": {"visits": 41}}).encode()
    assert await get(client, token(old_key, payload)) == (200, "visits=1")
    assert await get(client, token(derive_key(STRONG), payload)) == (200, "visits=42")


async def test_forged_or_garbled_cookies_are_fresh_sessions_logged_once(
    client: TestClient[web.Request, web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    key = derive_key(STRONG)
    bad = [
        "!!!not-base64!!!",
        "gAAAAA" + "A" * 80,
        token(key, b"\xff\xfe not utf-8"),
        token(key, b"not json"),
        token(key, b"[1, 2, 3]"),
        token(key, b'"a string"'),
        token(key, b'{"created": "yesterday", "session": {}}'),
        token(key, b'{"created": 1, "session": [1, 2]}'),
        token(key, b"[" * 3000 + b"]" * 3000),
    ]
    for _ in range(3):
        for cookie in bad:
            assert await get(client, cookie) == (200, "visits=1"), cookie
    lines = [r.getMessage() for r in caplog.records if "cookie" in r.getMessage().lower()]
    assert len(lines) == 1, lines


async def test_cookie_is_secure_over_https_through_a_trusted_proxy_only(tmp_path: Path) -> None:
    """nginx terminates TLS and says so in X-Forwarded-Proto: the cookie then carries
    Secure (a browser never sends it over plain HTTP); a direct HTTP client, or an
    untrusted one claiming https, gets a cookie without it. Always HttpOnly, SameSite=Lax."""
    project = write_project(
        tmp_path / "site",
        {
            "counter": """
                import aiohttp_session
                from tranzit import web

                class Visits(web.TZView):
                    async def get(self, request):
                        session = await aiohttp_session.get_session(request)
                        session["n"] = session.get("n", 0) + 1
                        return web.Response(text=str(session["n"]))

                routes = {"/": Visits}
            """
        },
    )
    https = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}

    async def cookie(client: TestClient[web.Request, web.Application], **headers: str) -> str:
        client.session.cookie_jar.clear()
        resp = await client.get("/", headers=headers)
        assert resp.status == 200
        return resp.headers["Set-Cookie"].lower()

    async with project_client(project, secret_key=STRONG, trusted_proxies="127.0.0.1") as client:
        secure = await cookie(client, **https)
        plain = await cookie(client)
    assert "; secure" in secure and "; secure" not in plain
    for header in (secure, plain):
        assert "httponly" in header and "samesite=lax" in header
    async with project_client(project, secret_key=STRONG, trusted_proxies="10.9.9.9") as client:
        assert "; secure" not in await cookie(client, **https)
