"""Helpers and session fixtures of the Docker stack tests (re-exported by conftest.py).

The Docker stack, for real: an engine, tranzit's images, a generated project.

Everything here is session- or module-scoped so the images are built once.
Without an engine (and no way to start one) the tests are skipped with the
reason, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "cookiecutter-tranzit"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

# Measurements printed at the end of the session (and in the closing note of issue 5).
METRICS: dict[str, str] = {}


def record(name: str, value: float | str, unit: str = "s") -> None:
    METRICS[name] = f"{value:.2f} {unit}" if isinstance(value, float) else f"{value}"


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output, which says why."""
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


@dataclass
class DockerEnv:
    compose: list[str]
    env: dict[str, str]  # PYTHON_IMAGE, NGINX_IMAGE, PIP_OFFLINE + the image tags below
    runtime_image: str
    nginx_image: str


@pytest.fixture(scope="session")
def docker_env() -> DockerEnv:
    """An engine and compose (scripts/docker-env.sh starts/installs them when it can)."""
    script = REPO / "scripts" / "docker-env.sh"
    proc = subprocess.run(
        ["bash", str(script), "--env"], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        reason = f"no Docker engine: {proc.stderr.strip().splitlines()[-3:]}"
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    values: dict[str, str] = {}
    for word in shlex.split(proc.stdout.strip().removeprefix("export ")):
        key, _, value = word.partition("=")
        values[key] = value
    tag = uuid.uuid4().hex[:8]
    runtime_image = f"tranzit-test/runtime:{tag}"
    nginx_image = f"tranzit-test/nginx:{tag}"
    build_env = {
        **os.environ,
        "PYTHON_IMAGE": values["PYTHON_IMAGE"],
        "NGINX_IMAGE": values["NGINX_IMAGE"],
        "PIP_OFFLINE": values["PIP_OFFLINE"],
        "TRANZIT_RUNTIME_IMAGE": runtime_image,
        "TRANZIT_NGINX_IMAGE": nginx_image,
    }
    return DockerEnv(shlex.split(values["COMPOSE"]), build_env, runtime_image, nginx_image)


def image_size(image: str) -> str:
    out = run(["docker", "image", "inspect", "-f", "{{.Size}}", image], timeout=30).stdout
    return f"{int(out.strip()) / 1e6:.0f} MB"


@pytest.fixture(scope="session")
def tranzit_images(docker_env: DockerEnv) -> Iterator[DockerEnv]:
    """tranzit's runtime and nginx images, built once per session from docker/."""
    started = time.monotonic()
    run(
        [
            *docker_env.compose,
            "-f",
            str(REPO / "docker" / "compose.images.yaml"),
            "--profile",
            "images",
            "build",
        ],
        env=docker_env.env,
        timeout=900,
    )
    record("build runtime + nginx images (layer cache may apply)", time.monotonic() - started)
    record("size runtime image", image_size(docker_env.runtime_image))
    record("size nginx image", image_size(docker_env.nginx_image))
    try:
        yield docker_env
    finally:
        subprocess.run(
            ["docker", "image", "rm", docker_env.runtime_image, docker_env.nginx_image],
            capture_output=True,
            timeout=120,
        )


@dataclass
class Stack:
    """A generated project, built and running under a unique compose project name."""

    root: Path
    name: str
    compose_cmd: list[str]
    env: dict[str, str]
    port: int
    images: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(
            [*self.compose_cmd, "-p", self.name, *args],
            env=self.env,
            cwd=self.root,
            timeout=timeout,
        )

    def logs(self) -> str:
        proc = subprocess.run(
            [*self.compose_cmd, "-p", self.name, "logs", "--no-color", "--tail", "200"],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return proc.stdout + proc.stderr

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service).stdout
        return [line for line in out.split() if line]


CURRENT_STACK: list[Stack] = []
