"""Encrypted cookie sessions: the secret's rules, the cookie key, the cookie storage.

The key is derived from ``secret_key`` with scrypt (a deliberately slow KDF), so
a cookie cannot be used to test guesses of the secret quickly offline; the
secret itself must be long and varied in production. A cookie that does not
decrypt to a session (forged, garbled, from another key) is a fresh session.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import ConfigError
from .throttle import Throttle

if TYPE_CHECKING:
    from aiohttp import web

    from .project import Project

__all__ = [
    "MIN_SECRET_BITS",
    "MIN_SECRET_LENGTH",
    "check_secret",
    "derive_key",
    "secret_weakness",
    "session_key",
    "setup_sessions",
]

log = logging.getLogger("tranzit")

MIN_SECRET_LENGTH = 32
MIN_SECRET_BITS = 128
MAKE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'

#: Fixed and versioned: changing the salt or the cost invalidates every cookie.
KDF_SALT = b"tranzit session cookie v1"
#: About 60 ms and 32 MiB, once per process and secret.
KDF_N, KDF_R, KDF_P = 2**15, 8, 1

#: At most one warning about unreadable cookies per this many seconds.
WARN_INTERVAL = 60.0

_warned: set[bytes] = set()


def secret_weakness(secret: str) -> str | None:
    """Why ``secret`` is too weak for production, or None.

    The rule: at least 32 characters, and length x log2(distinct characters) at
    least 128 bits. ``secrets.token_urlsafe(32)`` gives about 200.
    """
    distinct = len(set(secret))
    bits = len(secret) * math.log2(distinct) if distinct > 1 else 0.0
    if len(secret) >= MIN_SECRET_LENGTH and bits >= MIN_SECRET_BITS:
        return None
    return f"found {len(secret)} characters, {distinct} distinct, about {bits:.0f} bits"


def check_secret(config: Config) -> None:
    """Refuse, in production, a missing or weak ``secret_key``; in development, warn once.

    Checked whether or not sessions are in use: a production start without a
    proper secret is a mistake to stop early.
    """
    where = str(config.source or "configuration")
    secret = config.secret_key
    if not secret:
        if config.production:
            raise ConfigError(
                where,
                "secret_key",
                "expected a secret when production is true (set TRANZIT_SECRET_KEY), "
                f"found none; make one with: {MAKE_SECRET}",
            )
        return
    weakness = secret_weakness(secret)
    if weakness is None:
        return
    expected = (
        f"expected a secret of at least {MIN_SECRET_LENGTH} characters and "
        f"{MIN_SECRET_BITS} bits (length x log2 of distinct characters), {weakness}; "
        f"make one with: {MAKE_SECRET}"
    )
    if config.production:
        raise ConfigError(where, "secret_key", expected)
    digest = hashlib.sha256(secret.encode()).digest()
    if digest not in _warned:
        _warned.add(digest)
        log.warning("%s: secret_key: weak, refused in production: %s", where, expected)


@functools.lru_cache(maxsize=8)
def derive_key(secret: str) -> bytes:
    """The 32-byte cookie key of ``secret``: scrypt, computed once per process."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=KDF_SALT, length=32, n=KDF_N, r=KDF_R, p=KDF_P).derive(secret.encode())


def session_key(config: Config, project: Project) -> bytes:
    """The 32-byte key of the encrypted session cookie, stable across restarts and workers."""
    check_secret(config)
    if config.secret_key:
        return derive_key(config.secret_key)
    if project.root.as_posix().encode() not in _warned:
        _warned.add(project.root.as_posix().encode())
        log.warning(
            "no secret_key set: sessions use a development key derived from the project path; "
            "set TRANZIT_SECRET_KEY before exposing this server"
        )
    # Derived from a path anyone may know: a slow KDF would protect nothing here.
    return hashlib.sha256(b"tranzit-development-key:" + str(project.root).encode()).digest()


def setup_sessions(app: web.Application, key: bytes) -> None:
    """Encrypted cookie sessions (``aiohttp_session.get_session(request)``).

    aiohttp_session is imported only here: a project that never uses sessions
    does not pay for their middleware on every request (about 10 µs of a 55 µs
    hello), and importing it is how a project is seen to use them.
    """
    import aiohttp_session

    aiohttp_session.setup(app, _cookie_storage(key))


def _cookie_storage(key: bytes) -> Any:
    """aiohttp_session's encrypted cookie storage, reading only well-formed sessions.

    Its own ``load_session`` answers a cookie that decrypts to something other
    than a JSON object with a 500, and logs every bad cookie: a client can
    cause both. The class is made here because importing aiohttp_session at
    module level would mark every project as using sessions.
    """
    import base64
    import binascii
    import json

    from aiohttp_session import Session
    from aiohttp_session.cookie_storage import EncryptedCookieStorage
    from cryptography.fernet import Fernet, InvalidToken

    fernet = Fernet(base64.urlsafe_b64encode(key))
    unreadable = Throttle(WARN_INTERVAL)

    class CookieStorage(EncryptedCookieStorage):
        async def load_session(self, request: web.Request) -> Session:
            cookie = self.load_cookie(request)
            if cookie is None:
                return Session(None, data=None, new=True, max_age=self.max_age)
            try:
                plain = fernet.decrypt(cookie.encode("utf-8"), ttl=self.max_age)
                data = json.loads(plain.decode("utf-8"))
            except (InvalidToken, binascii.Error, ValueError, TypeError, RecursionError):
                data = None
            if not _is_session_data(data):
                if unreadable.due():
                    log.warning(
                        "unreadable session cookie (forged, garbled or from another key): "
                        "fresh session (further ones not logged for %.0f s)",
                        WARN_INTERVAL,
                    )
                return Session(None, data=None, new=True, max_age=self.max_age)
            return Session(None, data=data, new=False, max_age=self.max_age)

        async def save_session(
            self, request: web.Request, response: web.StreamResponse, session: Session
        ) -> None:
            await super().save_session(request, response, session)
            # Secure whenever the client reached us over HTTPS: request.secure follows
            # X-Forwarded-Proto from a trusted proxy (tranzit.proxy), so behind nginx's
            # TLS it is set, and a plain-HTTP development server still gets its cookie.
            if request.secure and self.cookie_name in response.cookies:
                response.cookies[self.cookie_name]["secure"] = True

    # SameSite=Lax: the browser leaves the cookie off cross-site POSTs and subresource
    # requests (a CSRF defence); following a link to the site still logs the user in.
    return CookieStorage(fernet, samesite="Lax")


def _is_session_data(data: Any) -> bool:
    """The shape aiohttp_session writes: ``{"created": int, "session": {...}}``."""
    if not isinstance(data, dict):
        return False
    created, session = data.get("created"), data.get("session")
    created_ok = created is None or (isinstance(created, int) and not isinstance(created, bool))
    return created_ok and (session is None or isinstance(session, dict))
