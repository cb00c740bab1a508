"""Postgres: each app's connection pool (``database_url``) and the project's migrations.

asyncpg, SQLAlchemy and Alembic come with the ``postgres`` extra and are imported
only here, when a database is used: a project without one never loads them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from .errors import ConfigError, TranzitError, show_key

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from asyncpg import Pool

__all__ = [
    "CONNECT_TIMEOUT",
    "DB",
    "MIGRATIONS_DIR",
    "POOL_CLOSE_TIMEOUT",
    "POOL_MAX_SIZE",
    "POOL_MIN_SIZE",
    "DatabaseError",
    "database_pool",
    "location",
    "migrate",
    "new_revision",
    "open_pool",
    "run_migrations",
]

log = logging.getLogger("tranzit")

#: The app's ``asyncpg.Pool`` when ``database_url`` is set: ``request.app[DB]`` in a
#: view, ``conn.request.app[DB]`` in a rule.
DB: web.AppKey[Pool] = web.AppKey("DB")

#: Seconds start-up and ``tranzit migrate`` keep trying a server that does not answer
#: (a database container still starting) before they give up.
CONNECT_TIMEOUT = 30.0
#: The pool tranzit opens. Other sizes or settings: open your own in ``setup(app)``.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
#: Seconds clean-up waits for connections still in use before it closes them anyway.
POOL_CLOSE_TIMEOUT = 10.0
#: Where a project keeps its Alembic scripts (``env.py``, ``script.py.mako``, ``versions/``).
MIGRATIONS_DIR = "migrations"

_SETTING = "database_url (server.yml or TRANZIT_DATABASE_URL)"

T = TypeVar("T")


class DatabaseError(TranzitError):
    """The database could not be reached, or refused us, or a migration command failed."""

    exit_code = 1


def location(url: str) -> str:
    """``host:port/dbname`` of a Postgres URL: what messages show (never the password)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["localhost"])[0]
    return f"{host}:{parts.port or 5432}/{parts.path.lstrip('/') or parts.username or ''}"


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError:
        raise DatabaseError(
            "database_url is set but asyncpg is not installed: pip install 'tranzit[postgres]'"
        ) from None
    return asyncpg


async def _retrying(url: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()`` until the server answers, for :data:`CONNECT_TIMEOUT` seconds.

    A refused or timed-out connection, or a server still starting, is tried again
    with one log line each time; a server that answers and refuses (a wrong
    password, no such database) fails at once. Either failure is one :class:`DatabaseError` line.
    """
    asyncpg = _asyncpg()
    where = location(url)
    deadline = time.monotonic() + CONNECT_TIMEOUT
    delay = 0.5
    while True:
        left = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(attempt(), timeout=max(left, 1.0))
        except (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError) as exc:
            reason = f"{type(exc).__name__}: {show_key(str(exc), 200)}"
            if left <= delay:
                raise DatabaseError(
                    f"cannot reach the database at {where} within {CONNECT_TIMEOUT:g} s "
                    f"({reason}); check {_SETTING}"
                ) from None
            log.warning("database at %s not reachable yet (%s); retrying", where, reason)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(
                f"cannot connect to the database at {where}: "
                f"{show_key(str(exc), 200)}; check {_SETTING}"
            ) from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def open_pool(url: str) -> Pool:
    """tranzit's pool for ``url`` (:data:`POOL_MIN_SIZE` to :data:`POOL_MAX_SIZE`)."""
    asyncpg = _asyncpg()

    async def create() -> Pool:
        return await asyncpg.create_pool(url, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE)

    pool = await _retrying(url, create)
    log.info("database pool open: %s", location(url))
    return pool


def database_pool(url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry: the pool in ``app[DB]`` while the app runs."""

    async def pool(app: web.Application) -> AsyncIterator[None]:
        app[DB] = await open_pool(url)
        yield
        try:
            await asyncio.wait_for(app[DB].close(), POOL_CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("database connections still in use after %g s: closed", POOL_CLOSE_TIMEOUT)
            app[DB].terminate()

    return pool


# Migrations ---------------------------------------------------------------------------


def _alembic_config(directory: Path, url: str | None) -> AlembicConfig:
    """Alembic's configuration, built here: a project needs no ``alembic.ini``."""
    try:
        from alembic.config import Config as AlembicConfig
    except ImportError:
        raise DatabaseError(
            "tranzit migrate needs Alembic: pip install 'tranzit[postgres]'"
        ) from None
    if not (directory / "env.py").is_file():
        raise ConfigError(
            str(directory),
            None,
            "no env.py: a project's migrations/ holds env.py (`from tranzit.db import "
            "run_migrations` and `run_migrations()`), script.py.mako and versions/; "
            "see tranzit's docs/database.md",
        )
    config = AlembicConfig()
    config.set_main_option("script_location", str(directory).replace("%", "%%"))
    config.attributes["database_url"] = url
    return config


def migrate(url: str, directory: Path, revision: str = "head") -> tuple[str, ...]:
    """Bring the database at ``url`` to ``revision`` of the scripts in ``directory``:
    forward (``head``, ``+1``, a later revision) or back (``base``, ``-1``, an earlier
    one). Returns the revisions it is at then (none: ``base``).

    Waits for the server first (:data:`CONNECT_TIMEOUT`). Blocking: it runs its own
    event loops, so call it from a thread when one is running.
    """
    from alembic import command
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    config = _alembic_config(directory, url)
    current = asyncio.run(_current(url))
    try:
        if _is_downgrade(config, revision, current):
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)
    except (CommandError, RevisionError) as exc:
        raise DatabaseError(f"migrate: {show_key(str(exc), 300)}") from None
    return asyncio.run(_current(url))


def new_revision(directory: Path, message: str) -> Path:
    """Write an empty revision file (``upgrade``/``downgrade`` to fill in) in ``versions/``."""
    from alembic import command
    from alembic.util import CommandError

    config = _alembic_config(directory, None)
    (directory / "versions").mkdir(exist_ok=True)
    try:
        script = command.revision(config, message=message)
    except CommandError as exc:
        raise DatabaseError(f"migrate --new: {show_key(str(exc), 300)}") from None
    if script is None or isinstance(script, list):  # pragma: no cover - autogenerate only
        raise DatabaseError("migrate --new: alembic wrote no single revision")
    return Path(script.path)


async def _current(url: str) -> tuple[str, ...]:
    """The revisions the database is at (none: ``base``), from Alembic's version table."""
    asyncpg = _asyncpg()
    connection = await _retrying(url, lambda: asyncpg.connect(url))
    try:
        rows = await connection.fetch("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return ()
    finally:
        await connection.close()
    return tuple(row["version_num"] for row in rows)


def _is_downgrade(config: AlembicConfig, revision: str, current: tuple[str, ...]) -> bool:
    """Whether reaching ``revision`` from ``current`` goes back: ``base``, ``-N``, or a
    revision below one the database is at."""
    if revision == "base" or revision.startswith("-"):
        return True
    if revision in ("head", "heads") or revision.startswith("+") or not current:
        return False
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config)
    target = script.get_revision(revision)
    if target is None or target.revision in current:
        return False
    below = {s.revision for head in current for s in script.iterate_revisions(head, "base")}
    return target.revision in below


def run_migrations() -> None:
    """The whole of a project's ``migrations/env.py``: run Alembic's migrations online
    (SQLAlchemy's async engine on asyncpg), all in one transaction.

    Migrations are written by hand (``op.create_table(...)``): there is no model
    metadata to compare with, so ``target_metadata`` is None.
    """
    from alembic import context

    if context.is_offline_mode():
        raise DatabaseError("migrations run against the database only; --sql is not supported")
    url = context.config.attributes.get("database_url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise DatabaseError(f"no database to migrate: set {_SETTING} and run tranzit migrate")
    asyncio.run(_run_online(url))


async def _run_online(url: str) -> None:
    """SQLAlchemy's engine on asyncpg's own connection: the URL means what it means
    to the pool (``sslmode`` and the rest, which SQLAlchemy's URL would read otherwise)."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    asyncpg = _asyncpg()
    engine = create_async_engine(
        "postgresql+asyncpg://", async_creator=lambda: asyncpg.connect(url), poolclass=NullPool
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_in_transaction)
    finally:
        await engine.dispose()


def _run_in_transaction(connection: Any) -> None:
    from alembic import context

    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
