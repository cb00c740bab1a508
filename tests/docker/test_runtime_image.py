"""The runtime image carries what serving needs and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dockerstack import DockerEnv, image_bytes, record

import tranzit

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

#: The most the runtime image may add on top of its Python base image. It was 40 MB
#: (37.0 measured) until the Postgres option (issue 18): asyncpg for the pool, SQLAlchemy
#: and Alembic for the migrate role, 26.7 MB as installed, 9.7 MB once trimmed (no other
#: dialects, no bundled tests, no bytecode for what only the one-shot migrate loads).
MAX_OVER_BASE = 48e6
#: What only the project generator (cookiecutter) pulls in, and pip: serving uses none of it.
NOT_FOR_SERVING = ("cookiecutter", "requests", "rich", "arrow", "pip", "setuptools")
#: What the roles import: the app, gunicorn's aiohttp worker, uvloop, Redis, sessions,
#: templates (jinja2 is the pages', no longer only the generator's), tokens, proxy headers,
#: the dev server's reloader.
FOR_SERVING = (
    "tranzit.auth",
    "tranzit.proxy",
    "aiohttp_jinja2",
    "jinja2",
    "jwt",
    "aiohttp_remotes",
    "watchfiles",
    "tranzit.app",
    "tranzit.serve",
    "tranzit.gunicorn_conf",
    "aiohttp.worker",
    "uvloop",
    "redis.asyncio",
    "aiohttp_session.cookie_storage",
    "cryptography.fernet",
)


def in_image(image: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` in a container of ``image`` with a read-only root, as the stack runs it."""
    isolated = ["--network", "none", "--read-only", "--tmpfs", "/tmp"]
    return subprocess.run(
        ["docker", "run", "--rm", *isolated, "--entrypoint", argv[0], image, *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_size_over_the_python_base(tranzit_images: DockerEnv) -> None:
    base = tranzit_images.env["PYTHON_IMAGE"]
    added = image_bytes(tranzit_images.runtime_image) - image_bytes(base)
    record(f"runtime image over its base ({base})", f"{added / 1e6:.1f} MB")
    assert added <= MAX_OVER_BASE, f"the runtime image adds {added / 1e6:.1f} MB to {base}"


def test_python_environment_holds_serving_only(tranzit_images: DockerEnv) -> None:
    probe = (
        "import importlib, importlib.util, json, sys; "
        f"absent = [m for m in {NOT_FOR_SERVING!r} if importlib.util.find_spec(m)]; "
        f"[importlib.import_module(m) for m in {FOR_SERVING!r}]; "
        "import tranzit; print(json.dumps({'present': absent, 'version': tranzit.__version__}))"
    )
    result = in_image(tranzit_images.runtime_image, "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["present"] == [], f"the runtime image has {found['present']}"
    assert found["version"] == tranzit.__version__


def test_migrate_loads_on_a_read_only_root(tranzit_images: DockerEnv) -> None:
    # SQLAlchemy, Alembic and Mako carry no bytecode (the size budget): migrate compiles
    # them in memory, and cannot write it. asyncpg, which web and ws load, keeps its own.
    probe = (
        "import importlib.util, os, alembic.command, sqlalchemy.ext.asyncio, asyncpg; "
        "print(os.path.exists(importlib.util.cache_from_source(asyncpg.__file__)))"
    )
    result = in_image(tranzit_images.runtime_image, "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True", "asyncpg has no bytecode in the image"
    result = in_image(tranzit_images.runtime_image, "tranzit-entrypoint", "migrate", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tranzit migrate"), result.stdout


def test_generator_refuses_in_one_line(tranzit_images: DockerEnv) -> None:
    result = in_image(tranzit_images.runtime_image, "tranzit", "project", "site", "--no-input")
    assert result.returncode == 1
    assert result.stderr.startswith("tranzit: tranzit project needs cookiecutter"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_base_image_pip_installs_into_the_venv(
    tranzit_images: DockerEnv, tmp_path: Path
) -> None:
    # How a project adds a package to its app image (its README): `RUN pip install ...` as root.
    wheels = tmp_path / "wheels"
    download = ["pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(wheels)]
    subprocess.run([sys.executable, "-m", *download, "six"], check=True, timeout=300)
    script = (
        "pip install --no-index --no-cache-dir --quiet /wheels/six-*.whl"
        " && python -c 'import six; print(six.__file__)'"
    )
    run = ["docker", "run", "--rm", "-v", f"{wheels}:/wheels:ro", "--network", "none"]
    as_root = ["--user", "0", "--entrypoint", "sh", tranzit_images.runtime_image]
    result = subprocess.run(
        [*run, *as_root, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("/opt/venv/"), result.stdout
