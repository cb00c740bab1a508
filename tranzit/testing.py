"""Helpers for testing a tranzit project with a real server on 127.0.0.1, and a
throw-away Postgres database.

```python
from tranzit.testing import database, project_client

async def test_page():
    async with project_client(PROJECT_DIR) as client:
        resp = await client.get("/")
        ws = await client.ws_connect("/ws")

async def test_notes():  # a new database, with the project's migrations applied
    async with database(PROJECT_DIR) as url:
        async with project_client(PROJECT_DIR, database_url=url) as client:
            resp = await client.get("/notes")
```
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from . import db
from .app import create_app
from .errors import TranzitError
from .loader import load

if TYPE_CHECKING:
    import pwd

__all__ = ["DatabaseUnavailable", "database", "project_app", "project_client"]

#: A server where the tests may ``CREATE DATABASE`` (a CI service), instead of a local one.
TEST_DATABASE_VARIABLE = "TRANZIT_TEST_DATABASE_URL"


def project_app(
    project_dir: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> web.Application:
    """The project's HTTP application, as ``tranzit run`` builds it.

    ``overrides`` change settings (``ws_max_tasks=2``); ``environ`` replaces
    ``os.environ`` for ``TRANZIT_*`` lookups (default: none, for repeatable tests).
    """
    config, project = load(project_dir, environ=environ or {}, required=False, **overrides)
    return create_app(config, project)


@asynccontextmanager
async def project_client(
    project_dir: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An aiohttp test client bound to the project's app served on 127.0.0.1."""
    app = project_app(Path(project_dir), environ=environ, **overrides)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


class DatabaseUnavailable(TranzitError):
    """No Postgres for :func:`database`: neither its server binaries nor
    ``TRANZIT_TEST_DATABASE_URL``."""


@asynccontextmanager
async def database(
    project_dir: str | os.PathLike[str] | None = None, *, migrate: bool = True
) -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped afterwards; with the migrations of
    ``project_dir`` applied when it has ``migrations/`` (and ``migrate`` is true).

    The database is made on ``TRANZIT_TEST_DATABASE_URL`` when that is set, else on a
    server of this process's own: PostgreSQL's ``initdb`` and ``pg_ctl`` (from
    ``PATH``, ``/usr/lib/postgresql/*/bin`` or ``/usr/local/pgsql/bin``) start one in a
    temporary directory on first use, on 127.0.0.1 and a free port, with a password of
    its own and without fsync;
    it is stopped and deleted when the interpreter exits. Neither: :class:`DatabaseUnavailable`.
    """
    import asyncpg

    server = os.environ.get(TEST_DATABASE_VARIABLE) or ""
    if not server:
        server = await asyncio.to_thread(_local_server)
    name = f"tranzit_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        force = " WITH (FORCE)" if admin.get_server_version().major >= 13 else ""
    finally:
        await admin.close()
    url = urllib.parse.urlsplit(server)._replace(path="/" + name).geturl()
    try:
        migrations = Path(project_dir) / db.MIGRATIONS_DIR if project_dir is not None else None
        if migrate and migrations is not None and migrations.is_dir():
            await asyncio.to_thread(db.migrate, url, migrations)
        yield url
    finally:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"{force}')
        finally:
            await admin.close()


#: Where PostgreSQL's server binaries are looked for after ``PATH``: Debian's (newest
#: first), then a source build's.
POSTGRES_BIN_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin")

_local: _LocalServer | None = None
_local_lock = threading.Lock()


def _local_server() -> str:
    """The URL of this process's own server, started on first use."""
    global _local
    with _local_lock:
        if _local is None:
            _local = _LocalServer.start()
            atexit.register(_local.stop)
        return _local.url


def _postgres_bin() -> Path | None:
    """The directory that has both ``initdb`` and ``pg_ctl``."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    for pattern in POSTGRES_BIN_DIRS:
        candidates += sorted(Path("/").glob(pattern.lstrip("/")), key=_major, reverse=True)
    return next(
        (d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None
    )


def _major(path: Path) -> int:
    """15 for ``/usr/lib/postgresql/15/bin``."""
    version = path.parent.name
    return int(version) if version.isdigit() else 0


class _LocalServer:
    """A Postgres server in a temporary directory, run as an ordinary user."""

    def __init__(
        self, directory: Path, bin_dir: Path, port: int, user: pwd.struct_passwd | None
    ) -> None:
        self.directory = directory
        self.bin_dir = bin_dir
        self.port = port
        # A password of its own: another user of this machine cannot connect to it.
        self.password = secrets.token_urlsafe(24)
        self.url = f"postgresql://postgres:{self.password}@127.0.0.1:{port}/postgres"
        self.user = user

    @classmethod
    def start(cls) -> _LocalServer:
        bin_dir = _postgres_bin()
        if bin_dir is None:
            raise DatabaseUnavailable(
                "no Postgres to test with: install PostgreSQL's server binaries (initdb and "
                "pg_ctl; Debian: apt install postgresql), or set TRANZIT_TEST_DATABASE_URL "
                "to a server where CREATE DATABASE is allowed"
            )
        user = _unprivileged_user()  # its error before a temporary directory is made
        directory = Path(tempfile.mkdtemp(prefix="tranzit-postgres-"))
        server = cls(directory, bin_dir, _free_port(), user)
        try:
            server._start()
        except BaseException:
            server.stop()
            raise
        return server

    def _start(self) -> None:
        if self.user is not None:  # initdb and postgres refuse to run as root
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        data = self.directory / "data"
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n", encoding="utf-8")
        if self.user is not None:
            os.chown(password_file, self.user.pw_uid, self.user.pw_gid)
        self._run(
            "initdb", "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={password_file}", "--no-sync",
        )  # fmt: skip
        password_file.unlink()
        with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            # A throw-away server: nothing it writes needs to survive a crash.
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.directory}'\n"
                "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n"
            )
        self._run("pg_ctl", "-D", str(data), "-l", str(self.directory / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop the server, if it runs, and delete its directory."""
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        as_user: dict[str, Any] = {}
        if self.user is not None:
            as_user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        done = subprocess.run(
            [str(self.bin_dir / program), *args],
            cwd=self.directory,
            capture_output=True,
            text=True,
            check=False,
            **as_user,
        )
        if check and done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            raise DatabaseUnavailable(f"{program} failed (exit {done.returncode}): {lines[-1]}")


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Whom to run the server as: ourselves (None) unless we are root; then the
    ``postgres`` system user, else ``nobody``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise DatabaseUnavailable(
        "running as root, without a postgres or nobody user to run Postgres as"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
