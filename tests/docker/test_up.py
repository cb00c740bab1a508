"""README's first command, `bash scripts/up.sh`, the way a fresh machine runs it.

A bare Python first on PATH (a virtualenv with nothing installed: no tranzit,
no cookiecutter) and a virtualenv path that does not exist yet: the script
must make its own environment, generate the example, build and start the
stack, and print its URL.
"""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerstack import REPO, DockerEnv, record
from support import clean_env, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture
def bare_path(tmp_path: Path) -> str:
    """PATH with a bare venv's bin first and no directory that has tranzit or cookiecutter."""
    bare = tmp_path / "bare"
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base_python), "-m", "venv", str(bare)], check=True, timeout=120)
    dirs = [
        d
        for d in os.environ["PATH"].split(os.pathsep)
        if d and not any((Path(d) / tool).exists() for tool in ("tranzit", "cookiecutter"))
    ]
    path = os.pathsep.join([str(bare / "bin"), *dirs])
    probe = subprocess.run(
        ["python3", "-c", "import cookiecutter"],
        env={**os.environ, "PATH": path},
        capture_output=True,
        timeout=60,
    )
    assert probe.returncode != 0, "the bare Python can import cookiecutter"
    assert shutil.which("tranzit", path=path) is None
    return path


@pytest.fixture
def up_env(docker_env: DockerEnv, tmp_path: Path, bare_path: str) -> Iterator[dict[str, str]]:
    name = f"tzup{uuid.uuid4().hex[:8]}"
    env = clean_env(
        PATH=bare_path,
        TRANZIT_VENV=str(tmp_path / "venv"),
        TRANZIT_BUILD_DIR=str(tmp_path / "build"),
        TRANZIT_PUBLISH_PORT=f"127.0.0.1:{free_port()}",
        TRANZIT_PUBLISH_HTTPS_PORT=f"127.0.0.1:{free_port()}",
        COMPOSE_PROJECT_NAME=name,
        # Test tags, so the images a developer built stay as they are.
        TRANZIT_RUNTIME_IMAGE=f"tranzit-test/{name}-runtime:t",
        TRANZIT_NGINX_IMAGE=f"tranzit-test/{name}-base-nginx:t",
        IMAGE_NAME=f"tranzit-test/{name}",
    )
    try:
        yield env
    finally:
        down_env = {
            **env,
            "PATH": os.environ["PATH"],  # where the test's own compose command is
            "TRANZIT_EXAMPLE_DIR": str(tmp_path / "build" / "example" / "my_tranzit_site"),
        }
        subprocess.run(
            [*docker_env.compose, "down", "-v", "--rmi", "all", "--remove-orphans", "-t", "5"],
            cwd=REPO,
            env=down_env,
            capture_output=True,
            timeout=300,
        )
        tranzit_images = [env["TRANZIT_RUNTIME_IMAGE"], env["TRANZIT_NGINX_IMAGE"]]
        subprocess.run(
            ["docker", "image", "rm", "-f", *tranzit_images],
            capture_output=True,
            timeout=120,
        )


def test_up_sh_on_a_bare_python_brings_the_stack_up(up_env: dict[str, str]) -> None:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "up.sh")],
        cwd=REPO,
        env=up_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    record("scripts/up.sh from a bare Python (new venv)", time.monotonic() - started)
    assert done.returncode == 0, done.stderr[-6000:]
    # The default project serves HTTPS with its self-signed certificate; HTTP redirects.
    port = up_env["TRANZIT_PUBLISH_PORT"].rsplit(":", 1)[1]
    https_port = up_env["TRANZIT_PUBLISH_HTTPS_PORT"].rsplit(":", 1)[1]
    url = f"https://localhost:{https_port}/"
    assert done.stdout.strip().splitlines()[-1] == url
    assert (Path(up_env["TRANZIT_VENV"]) / "bin" / "tranzit").exists()
    unverified = ssl._create_unverified_context()
    with urllib.request.urlopen(url, timeout=10, context=unverified) as response:
        assert response.status == 200
        assert b"<html" in response.read().lower()
    with urllib.request.urlopen(f"{url}static/tranzit/tz.js", timeout=10, context=unverified) as r:
        assert r.headers["Server"] == "nginx"
    plain = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    try:
        plain.request("GET", "/static/site.css", headers={"Host": "localhost"})
        redirect = plain.getresponse()
        redirect.read()
    finally:
        plain.close()
    assert (redirect.status, redirect.getheader("Location")) == (308, f"{url}static/site.css")
