"""Who is on the other end of a websocket: connect hooks for the two common cases.

An app's ``routes.py`` may define ``ws_connect``: a function (plain or
``async``) called with the upgrade request before the websocket is accepted,
on ``ws_path`` and on the websocket port alike. What it returns is the
connection's identity (``conn.user`` in every rule); raising an HTTP error
(``web.HTTPUnauthorized``, ``web.HTTPForbidden``) refuses the upgrade with
that status. Two ready-made hooks:

* :func:`session_identity` — a value the login view stored in the encrypted
  session cookie (pages of the same site);
* :func:`token_identity` — a signed, expiring token (JWT, HS256, PyJWT) made by
  :func:`issue_token` in a view and passed by ``tz.js``'s ``token`` option as
  ``?token=``, or by other clients as ``Authorization: Bearer``.

Tokens are signed with a key derived from ``secret_key`` (HKDF from the
session key), so every worker and replica with the same secret accepts them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .config import Config
from .project import Project
from .sessions import session_key

__all__ = [
    "SIGNER",
    "Signer",
    "issue_token",
    "session_identity",
    "token_identity",
    "verify_token",
]
#: Seconds a token is valid by default: long enough to connect, short enough not to matter
#: if it leaks (it travels in a URL).
DEFAULT_MAX_AGE = 300.0
_ALGORITHM = "HS256"
_INFO = b"tranzit websocket tokens v1"

ConnectHook = Callable[[web.Request], Awaitable[Any]]


class Signer:
    """The token signing key of one project: HKDF-SHA256 of its session key.

    Derived on first use (the session key of a production secret costs a
    scrypt), so a project that issues no tokens never computes it.
    """

    def __init__(self, config: Config, project: Project) -> None:
        self._config = config
        self._project = project

    @functools.cached_property
    def key(self) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            session_key(self._config, self._project)
        )


#: The project's :class:`Signer`, on every app tranzit builds.
SIGNER = web.AppKey("tranzit.signer", Signer)


def session_identity(key: str = "user") -> ConnectHook:
    """A connect hook: the identity is ``session[key]``, stored there by the login view.

    No session, or no ``key`` in it: 401. Using it turns cookie sessions on for
    the project (``sessions: auto``).
    """

    async def connect(request: web.Request) -> Any:
        import aiohttp_session

        session = await aiohttp_session.get_session(request)
        identity = session.get(key)
        if identity is None:
            raise web.HTTPUnauthorized(text="401: log in first\n")
        return identity

    connect.uses_sessions = True  # type: ignore[attr-defined]
    connect.__qualname__ = f"session_identity({key!r})"
    return connect


def issue_token(
    request: web.Request | web.Application, identity: Any, *, max_age: float = DEFAULT_MAX_AGE
) -> str:
    """A signed token for ``identity`` (any JSON value), valid for ``max_age`` seconds.

    Call it in a view (``issue_token(request, session["user"])``) and hand the
    token to the page; :func:`token_identity` accepts it on either websocket endpoint.
    """
    import jwt

    app = request if isinstance(request, web.Application) else request.app
    now = int(time.time())
    claims = {"id": identity, "iat": now, "exp": now + max(1, round(max_age))}
    return jwt.encode(claims, app[SIGNER].key, algorithm=_ALGORITHM)


def verify_token(request: web.Request | web.Application, token: str) -> Any:
    """The identity in ``token``; ``web.HTTPUnauthorized`` when expired, tampered or malformed."""
    import jwt

    app = request if isinstance(request, web.Application) else request.app
    try:
        claims = jwt.decode(
            token, app[SIGNER].key, algorithms=[_ALGORITHM], options={"require": ["exp", "iat"]}
        )
    except jwt.ExpiredSignatureError:
        raise web.HTTPUnauthorized(text="401: token expired\n") from None
    except jwt.InvalidTokenError:
        raise web.HTTPUnauthorized(text="401: invalid token\n") from None
    if "id" not in claims:
        raise web.HTTPUnauthorized(text="401: invalid token\n")
    return claims["id"]


def token_identity(param: str = "token") -> ConnectHook:
    """A connect hook: the identity is in a token from :func:`issue_token`.

    Read from the query (``?token=…``, what ``tz.js`` sends: browsers cannot set
    headers on a websocket) or from ``Authorization: Bearer …``. None, expired,
    tampered: 401.
    """

    async def connect(request: web.Request) -> Any:
        token = request.query.get(param)
        if token is None:
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        if not token:
            raise web.HTTPUnauthorized(text="401: a token is required\n")
        return verify_token(request, token)

    connect.__qualname__ = f"token_identity({param!r})"
    return connect
