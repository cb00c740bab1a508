"""The release path, rehearsed with real servers on 127.0.0.1 in place of the public ones.

What `.github/workflows/release.yml` does on a version tag, then what a user
does with nothing from this checkout:

1. publish: sdist + wheel (``python -m build``), ``twine check --strict``,
   ``twine upload`` to a package index (pypiserver) that also holds the 2018
   releases 0.1 and 0.1.1 of the name, as the public index does; the runtime
   and nginx images built and pushed to an image registry (Debian's
   docker-registry); then the engine's copies of those two images removed;
2. as a user: a clean virtualenv, ``pip install tranzit`` from that index,
   ``tranzit project``, ``pip install -r requirements-dev.txt`` (must keep this
   tranzit), the project's own tests, then ``docker compose up --build --wait``
   with the project's Dockerfile starting FROM the images in the registry
   (its log shows them fetched); a page and a websocket rule answer through nginx.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dockerstack import IN_CI, REPO, DockerEnv, record, run
from support import clean_env, free_port
from websockets.sync.client import connect

import tranzit

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500)]

VERSION = tranzit.__version__
#: The 2018 releases of the original tranzit (another codebase) on the public index.
OLD_RELEASES = ("0.1", "0.1.1")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tranzit-ci"


def needed(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (scripts/test.sh installs it)"
        if IN_CI:
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    return path


def serve(argv: list[str], log: Path, ready_url: str) -> subprocess.Popen[bytes]:
    """Start a server with its output in ``log``; return once ``ready_url`` answers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{argv[0]} exited {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(ready_url, timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{ready_url} did not answer within 30 s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def old_releases() -> list[Path]:
    """The 2018 files of the name, from the public index (kept in the CI cache)."""
    folder = CACHE / "pypi-2018"
    done = folder / "complete"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen("https://pypi.org/pypi/tranzit/json", timeout=30) as response:
            releases = json.load(response)["releases"]
        assert set(OLD_RELEASES) <= set(releases), sorted(releases)
        names = []
        for version in OLD_RELEASES:
            for file in releases[version]:
                with urllib.request.urlopen(file["url"], timeout=60) as response:
                    (folder / file["filename"]).write_bytes(response.read())
                names.append(file["filename"])
        done.write_text("\n".join(names) + "\n")  # written last: the cache is whole
    return [folder / name for name in done.read_text().split()]


@dataclass
class Published:
    index: str  # the package index's simple API, as pip's --index-url
    old_files: list[str]  # the 2018 releases there
    registry: str  # host:port
    runtime_image: str
    nginx_image: str
    dist: list[Path]
    registry_log: Path

    def registry_requests(self) -> str:
        return self.registry_log.read_text(errors="replace")


@dataclass
class Index:
    url: str
    old_files: list[str]  # the 2018 releases' file names it holds


@pytest.fixture(scope="module")
def package_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    """pypiserver on 127.0.0.1, holding the 2018 releases; other names go on to PyPI."""
    server = needed("pypi-server")
    home = tmp_path_factory.mktemp("index")
    packages = home / "packages"
    packages.mkdir()
    old = old_releases()
    for file in old:
        shutil.copy2(file, packages / file.name)
    port = free_port()
    argv = [server, "run", "--host", "127.0.0.1", "--port", str(port), "-a", ".", "-P", "."]
    proc = serve([*argv, str(packages)], home / "log", f"http://127.0.0.1:{port}/health")
    try:
        yield Index(f"http://127.0.0.1:{port}", [file.name for file in old])
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def image_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Debian's docker-registry (distribution 2.8) on 127.0.0.1; the engine trusts
    127.0.0.0/8 without TLS. Its log has a line per request."""
    server = needed("docker-registry")
    home = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = home / "config.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "info", "accesslog": {"disabled": False}},
                "storage": {"filesystem": {"rootdirectory": str(home / "data")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    log = home / "log"
    proc = serve([server, "serve", str(config)], log, f"http://127.0.0.1:{port}/v2/")
    try:
        yield f"127.0.0.1:{port}", log
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def published(
    docker_env: DockerEnv,
    package_index: Index,
    image_registry: tuple[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Published]:
    """What the release workflow publishes, published to the two local servers."""
    index_url = package_index.url
    registry, registry_log = image_registry
    started = time.monotonic()

    dist = tmp_path_factory.mktemp("dist")
    run(["python", "-m", "build", "--outdir", str(dist), str(REPO)], timeout=600)
    files = sorted(dist.iterdir())
    run(["python", "-m", "twine", "check", "--strict", *map(str, files)], timeout=120)
    upload = ["python", "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar"]
    creds = ["--repository-url", f"{index_url}/", "-u", "rehearsal", "-p", "rehearsal"]
    run([*upload, *creds, *map(str, files)], timeout=120)

    runtime_image = f"{registry}/tranzit/runtime:{VERSION}"
    nginx_image = f"{registry}/tranzit/nginx:{VERSION}"
    images_env = {
        **docker_env.env,
        "TRANZIT_RUNTIME_IMAGE": runtime_image,
        "TRANZIT_NGINX_IMAGE": nginx_image,
    }
    images_file = str(REPO / "docker" / "compose.images.yaml")
    build = [*docker_env.compose, "-f", images_file, "--profile", "images", "build"]
    try:
        run(build, env=images_env, timeout=900)
        for image in (runtime_image, nginx_image):
            run(["docker", "push", "--quiet", image], timeout=600)
            run(["docker", "image", "rm", image], timeout=120)
            gone = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
            assert gone.returncode != 0, f"{image} is still in the engine"
        record("rehearsal: build, check and publish wheel + images", time.monotonic() - started)
        yield Published(
            f"{index_url}/simple/",
            package_index.old_files,
            registry,
            runtime_image,
            nginx_image,
            files,
            registry_log,
        )
    finally:
        for image in (runtime_image, nginx_image):  # also pulled again by the user's build
            subprocess.run(["docker", "image", "rm", image], capture_output=True, timeout=120)


def test_the_distributions_carry_the_template_and_nothing_of_the_checkout(
    published: Published,
) -> None:
    wheels = [f for f in published.dist if f.suffix == ".whl"]
    sdists = [f for f in published.dist if f.name.endswith(".tar.gz")]
    assert [f.name for f in wheels] == [f"tranzit-{VERSION}-py3-none-any.whl"]
    assert [f.name for f in sdists] == [f"tranzit-{VERSION}.tar.gz"]
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    for name in ("tranzit/_template/cookiecutter.json", "tranzit/static/tz.js", "tranzit/py.typed"):
        assert name in names, name
    with tarfile.open(sdists[0]) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    assert "cookiecutter-tranzit/cookiecutter.json" in members
    assert "LICENSE" in members
    for name in (*names, *members):
        assert not name.startswith(("tests/", "docker/", "bench/", ".venv/", "build/")), name
        assert "__pycache__" not in name, name


@dataclass
class User:
    """A clean virtualenv whose pip knows only the local index (no config, no find-links)."""

    venv: Path
    env: dict[str, str]

    def run(self, *argv: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run(list(argv), env=self.env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def user(published: Published, tmp_path_factory: pytest.TempPathFactory) -> User:
    home = tmp_path_factory.mktemp("user")
    venv = home / "venv"
    run(["python3", "-m", "venv", str(venv)], env=clean_env(), timeout=120)
    env = {k: v for k, v in clean_env().items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]),
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL=published.index,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return User(venv, env)


def installed_tranzit(user: User, cwd: Path) -> tuple[str, str]:
    code = "import tranzit; print(tranzit.__version__); print(tranzit.__file__)"
    version, location = user.run("python", "-c", code, cwd=cwd).stdout.split()
    return version, location


def test_a_user_installs_generates_tests_and_runs_the_stack(
    published: Published, user: User, docker_env: DockerEnv, tmp_path: Path
) -> None:
    started = time.monotonic()
    # `pip install tranzit`: the index also has 0.1 and 0.1.1; this release must win.
    with urllib.request.urlopen(f"{published.index}tranzit/", timeout=10) as response:
        listing = response.read().decode()
    assert published.old_files
    for name in published.old_files:
        assert f">{name}<" in listing, f"the index should list {name} too: {listing}"
    user.run("python", "-m", "pip", "install", "-q", "tranzit", cwd=tmp_path)
    version, location = installed_tranzit(user, tmp_path)
    assert version == VERSION
    assert Path(location).is_relative_to(user.venv), location

    # The project, its own requirements (they must keep this tranzit), its tests.
    user.run("tranzit", "project", "Rehearsal Site", "--no-input", cwd=tmp_path)
    project = tmp_path / "rehearsal_site"
    user.run("python", "-m", "pip", "install", "-q", "-r", "requirements-dev.txt", cwd=project)
    assert installed_tranzit(user, project) == (version, location)
    tests = user.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project)
    assert " passed" in tests.stdout, tests.stdout
    record("rehearsal: user install, generate, project tests", time.monotonic() - started)

    # The stack, its Dockerfile starting FROM the published images.
    seen_before = published.registry_requests()
    port = free_port()
    name = f"tzrel{uuid.uuid4().hex[:8]}"
    env = {
        **user.env,
        "PATH": os.environ["PATH"],  # the engine's compose command
        "TRANZIT_RUNTIME_IMAGE": published.runtime_image,
        "TRANZIT_NGINX_IMAGE": published.nginx_image,
        "IMAGE_NAME": f"tranzit-test/{name}",
        "TRANZIT_PUBLISH_PORT": f"127.0.0.1:{port}",
        "TRANZIT_PUBLISH_HTTPS_PORT": f"127.0.0.1:{free_port()}",
        "TRANZIT_TLS": "off",
    }
    compose = [*docker_env.compose, "-p", name]
    started = time.monotonic()
    try:
        up = [*compose, "up", "-d", "--build", "--wait", "--wait-timeout", "180"]
        run(up, env=env, cwd=project, timeout=900)
        record("rehearsal: compose up --build --wait (images pulled)", time.monotonic() - started)
        # The engine had no such tags any more: it resolved both at the registry
        # (HEAD or GET of the manifest; layers it already holds are not fetched again).
        fetched = published.registry_requests()[len(seen_before) :]
        for repository in ("tranzit/runtime", "tranzit/nginx"):
            asked = re.search(rf'"(HEAD|GET) /v2/{repository}/manifests/{VERSION} ', fetched)
            assert asked, f"{repository}:{VERSION} was not resolved at the registry"

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
            assert b"<html" in response.read().lower()
        # The example's /ws wants a logged-in session (POST /login sets its cookie).
        login = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            login.request(
                "POST",
                "/login",
                body="name=rehearsal",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            answer = login.getresponse()
            body = answer.read()
        finally:
            login.close()
        assert answer.status == 303, body
        cookie = answer.getheader("Set-Cookie", "").split(";", 1)[0]
        headers = {"Cookie": cookie}
        with connect(
            f"ws://127.0.0.1:{port}/ws", open_timeout=10, additional_headers=headers
        ) as ws:
            ws.send("echo|from the registry")
            assert ws.recv(timeout=10) == "echo|from the registry"
    finally:
        subprocess.run(
            [*compose, "down", "-v", "--rmi", "all", "--remove-orphans", "-t", "5"],
            env=env,
            cwd=project,
            capture_output=True,
            timeout=300,
        )
