"""Postgres: the pool on both apps, ``tranzit migrate``, and ``tranzit.testing.database``.

Against a real server: the throw-away one ``tranzit.testing.database`` starts
(PostgreSQL's binaries on this machine), or ``TRANZIT_TEST_DATABASE_URL``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from support import clean_env, free_port

from tranzit import db
from tranzit.app import create_app, create_ws_app
from tranzit.errors import ConfigError
from tranzit.loader import load
from tranzit.testing import database

ROUTES = """
from aiohttp import web

from tranzit.app import ROLE
from tranzit.db import DB


async def one(request):
    value = await request.app[DB].fetchval("SELECT 1")
    return web.Response(text=f"{request.app[ROLE]}: {value}")


async def one_rule(conn):
    return await conn.request.app[DB].fetchval("SELECT 1")


routes = {"/one": one}
ws_rules = {"one": one_rule}
"""

ENV_PY = "from tranzit.db import run_migrations\n\nrun_migrations()\n"

# Alembic's own template for new revisions (what `alembic init` writes).
SCRIPT_MAKO = '''"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''

REVISION = '''
"""create {table}"""
from alembic import op
import sqlalchemy as sa

revision = "{revision}"
down_revision = {down!r}


def upgrade():
    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("{table}")
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An app whose view and rule query through ``DB``, and two migrations: notes, tags."""
    (tmp_path / "server.yml").write_text("apps: [probe]\n")
    (tmp_path / "apps" / "probe").mkdir(parents=True)
    (tmp_path / "apps" / "__init__.py").write_text("")
    (tmp_path / "apps" / "probe" / "__init__.py").write_text("")
    (tmp_path / "apps" / "probe" / "routes.py").write_text(textwrap.dedent(ROUTES))
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY)
    (tmp_path / "migrations" / "script.py.mako").write_text(SCRIPT_MAKO)
    (versions / "0001_notes.py").write_text(
        REVISION.format(revision="0001", down=None, table="notes")
    )
    (versions / "0002_tags.py").write_text(
        REVISION.format(revision="0002", down="0001", table="tags")
    )
    return tmp_path


@pytest.fixture
async def empty_db() -> AsyncIterator[str]:
    async with database() as url:
        yield url


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    return {row["table_name"] for row in rows}


async def sessions(url: str) -> int:
    """Connections other than this one to the database of ``url``."""
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return count


def migrate(project: Path, url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(**({"TRANZIT_DATABASE_URL": url} if url else {}))
    return subprocess.run(
        [sys.executable, "-m", "tranzit", "migrate", "--project", str(project), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# The pool --------------------------------------------------------------------------


async def test_the_http_app_opens_its_pool_at_start_and_closes_it_at_clean_up(
    project: Path, empty_db: str
) -> None:
    config, loaded = load(project, environ={}, database_url=empty_db)
    app = create_app(config, loaded)
    assert await sessions(empty_db) == 0
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert await sessions(empty_db) == db.POOL_MIN_SIZE
        response = await client.get("/one")
        assert await response.text() == "http: 1"
        async with client.ws_connect("/ws") as ws:
            await ws.send_str("one|")
            assert await ws.receive_str(timeout=5) == "one|1"
        pool = app[db.DB]
        assert pool.get_max_size() == db.POOL_MAX_SIZE
    assert pool.is_closing()
    assert await sessions(empty_db) == 0


async def test_the_ws_app_has_its_own_pool(project: Path, empty_db: str) -> None:
    config, loaded = load(project, environ={}, database_url=empty_db)
    app = create_ws_app(config, loaded)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert await sessions(empty_db) == db.POOL_MIN_SIZE
        async with client.ws_connect("/") as ws:
            await ws.send_str("one|")
            assert await ws.receive_str(timeout=5) == "one|1"
    assert app[db.DB].is_closing()
    assert await sessions(empty_db) == 0


async def test_no_database_url_no_pool(project: Path) -> None:
    config, loaded = load(project, environ={})
    app = create_app(config, loaded)
    async with TestClient(TestServer(app, host="127.0.0.1")):
        assert db.DB not in app


async def test_an_unreachable_server_fails_start_up_in_one_line_without_the_password(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(db, "CONNECT_TIMEOUT", 1.5)
    port = free_port()  # nothing listens there
    url = f"postgresql://app:s3cret-pw@127.0.0.1:{port}/app"
    config, loaded = load(project, environ={}, database_url=url)
    server = TestServer(create_app(config, loaded), host="127.0.0.1")
    with caplog.at_level(logging.WARNING, "tranzit"), pytest.raises(db.DatabaseError) as failed:
        await server.start_server()
    await server.close()
    message = str(failed.value)
    assert f"cannot reach the database at 127.0.0.1:{port}/app within 1.5 s" in message
    assert "TRANZIT_DATABASE_URL" in message
    assert "\n" not in message
    retries = [r.getMessage() for r in caplog.records if "not reachable yet" in r.getMessage()]
    assert retries, "no log line while retrying"
    assert all("\n" not in line for line in retries)
    assert "s3cret-pw" not in message + caplog.text


async def test_a_refusing_server_fails_at_once(empty_db: str) -> None:
    """Only an unreachable server is worth waiting for; no such database is final."""
    missing = empty_db.rsplit("/", 1)[0] + "/no_such_database"
    started = time.monotonic()
    with pytest.raises(
        db.DatabaseError, match=r"at 127\.0\.0\.1:\d+/no_such_database: database .* does not exist"
    ):
        await db.open_pool(missing)
    assert time.monotonic() - started < db.CONNECT_TIMEOUT / 2


# tranzit migrate ----------------------------------------------------------------------


async def test_migrate_applies_is_idempotent_and_goes_back(project: Path, empty_db: str) -> None:
    # A parameter of asyncpg's (not SQLAlchemy's): the URL means the same to both.
    done = migrate(project, empty_db + "?sslmode=disable")
    assert done.returncode == 0, done.stderr
    assert "Running upgrade  -> 0001" in done.stderr and "0001 -> 0002" in done.stderr
    assert done.stdout.strip().endswith(": at revision 0002")
    assert {"notes", "tags"} <= await tables(empty_db)

    again = migrate(project, empty_db)
    assert again.returncode == 0, again.stderr
    assert "Running upgrade" not in again.stderr
    assert again.stdout.strip().endswith(": at revision 0002")

    back = migrate(project, empty_db, "--revision", "0001")  # below the current: a downgrade
    assert back.returncode == 0, back.stderr
    assert "Running downgrade 0002 -> 0001" in back.stderr
    assert await tables(empty_db) == {"alembic_version", "notes"}

    forward = migrate(project, empty_db, "--revision", "+1")
    assert forward.returncode == 0, forward.stderr
    assert "tags" in await tables(empty_db)

    one_back = migrate(project, empty_db, "--revision", "-1")
    assert one_back.returncode == 0, one_back.stderr
    assert "tags" not in await tables(empty_db)

    base = migrate(project, empty_db, "--revision", "base")
    assert base.returncode == 0, base.stderr
    assert base.stdout.strip().endswith(": at revision base")
    assert await tables(empty_db) == {"alembic_version"}


def test_migrate_new_writes_a_revision_after_the_head(project: Path) -> None:
    done = migrate(project, None, "--new", "add x")
    assert done.returncode == 0, done.stderr
    (created,) = (project / "migrations" / "versions").glob("*add_x.py")
    assert str(created) in done.stdout
    text = created.read_text()
    assert "down_revision = '0002'" in text
    assert "def upgrade() -> None:" in text


def test_migrate_an_unknown_revision_is_one_line(project: Path, empty_db: str) -> None:
    done = migrate(project, empty_db, "--revision", "nope")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "tranzit: migrate: Can't locate revision identified by 'nope'"
    )
    assert "Traceback" not in done.stderr


def test_migrate_without_migrations_says_what_to_add(tmp_path: Path) -> None:
    done = migrate(tmp_path, "postgresql://app:pw@127.0.0.1:5432/app")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert f"{tmp_path / 'migrations'}: no env.py" in done.stderr
    assert "run_migrations" in done.stderr


def test_migrate_without_database_url_says_where_to_set_it(project: Path) -> None:
    done = migrate(project, None)
    assert done.returncode == 2
    assert done.stderr.startswith(f"tranzit: {project / 'server.yml'}: database_url: not set")
    assert "TRANZIT_DATABASE_URL" in done.stderr


def test_migrate_with_a_bad_scheme_masks_the_password(project: Path) -> None:
    done = migrate(project, "mysql://app:s3cret-pw@db/app")
    assert done.returncode == 2
    assert "environment TRANZIT_DATABASE_URL: database_url: expected a PostgreSQL URL" in (
        done.stderr
    )
    assert "s3cret-pw" not in done.stderr


def test_migrate_gives_up_on_an_unreachable_server_in_one_line(project: Path) -> None:
    port = free_port()
    code = (
        "import sys, tranzit.db, tranzit.cli; tranzit.db.CONNECT_TIMEOUT = 1.5; "
        "sys.exit(tranzit.cli.main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "migrate", "--project", str(project)],
        env=clean_env(TRANZIT_DATABASE_URL=f"postgresql://app:s3cret-pw@127.0.0.1:{port}/app"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"tranzit: cannot reach the database at 127.0.0.1:{port}/app")
    assert "not reachable yet" in done.stderr  # the retries were logged
    assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr


def test_database_url_is_checked_when_read(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"database_url: expected a PostgreSQL URL"):
        load(project, environ={"TRANZIT_DATABASE_URL": "postgresql://h:notaport/x"})
    config, _ = load(project, environ={"TRANZIT_DATABASE_URL": "postgres://a:b@h:5433/x"})
    assert config.database_url == "postgres://a:b@h:5433/x"
    assert "b@h" not in repr(config)


# tranzit.testing.database --------------------------------------------------------------


async def test_each_database_is_new_empty_and_dropped_afterwards() -> None:
    async with database() as first, database() as second:
        assert first != second
        assert await tables(first) == set() == await tables(second)
    for url in (first, second):
        with pytest.raises(asyncpg.InvalidCatalogNameError):
            await asyncpg.connect(url)


async def test_database_applies_the_project_s_migrations(project: Path) -> None:
    async with database(project) as url:
        assert await tables(url) == {"alembic_version", "notes", "tags"}
    async with database(project, migrate=False) as url:
        assert await tables(url) == set()


async def test_database_on_the_server_of_tranzit_test_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with database() as local:  # the throw-away server, standing in for a CI service
        server = local.rsplit("/", 1)[0] + "/postgres"
        monkeypatch.setenv("TRANZIT_TEST_DATABASE_URL", server)
        async with database() as url:
            assert url.rsplit("/", 1)[0] == server.rsplit("/", 1)[0]
            assert url.rsplit("/", 1)[1].startswith("tranzit_test_")
            assert await tables(url) == set()
        with pytest.raises(asyncpg.InvalidCatalogNameError):
            await asyncpg.connect(url)


async def test_the_local_server_wants_its_password() -> None:
    """Another user of the machine reaches 127.0.0.1 too: without the password, no entry."""
    async with database() as url:
        parts = urllib.parse.urlsplit(url)
        assert parts.password, url
        assert await tables(url) == set()
        anyone = parts._replace(netloc=f"postgres@{parts.hostname}:{parts.port}").geturl()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(anyone, password="")
