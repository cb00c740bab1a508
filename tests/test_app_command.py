"""``tranzit app NAME``: a new app in a generated project, served for real."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import websockets.sync.client
from support import clean_env, running, write_project

from tranzit.config import load_config
from tranzit.newapp import _with_app


def tranzit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tranzit", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    made = tranzit("project", "mysite", "--no-input", "include_example=no", cwd=out)
    assert made.returncode == 0, made.stderr
    return out / "mysite"


def test_the_new_app_answers_in_the_running_project(project: Path) -> None:
    added = tranzit("app", "blog", cwd=project)
    assert added.returncode == 0, added.stderr
    assert "apps/blog" in added.stdout and "blog_hello" in added.stdout
    assert load_config(project / "server.yml", {}).apps == ("hello", "blog")
    assert "# tranzit settings" in (project / "server.yml").read_text()  # comments kept
    with running([sys.executable, "-m", "tranzit", "run"], cwd=project) as (_, http, ws_port):
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/blog/", timeout=5) as page:
            html = page.read().decode()
        assert "<h1>blog</h1>" in html and "/static/blog/app.css" in html
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/static/blog/app.css") as css:
            assert css.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=5) as first:
            assert first.status == 200  # the first app still has "/"
        for url in (f"ws://127.0.0.1:{http}/ws", f"ws://127.0.0.1:{ws_port}/"):
            with websockets.sync.client.connect(url, open_timeout=5) as ws:
                ws.send("blog_hello|")
                assert ws.recv(timeout=5) == "blog_hello|Hello there, from the blog app"
    # The project's own tests still pass with the new app in it.
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-2000:]


@pytest.mark.parametrize(
    ("name", "code", "says"),
    [
        ("json", 2, "would shadow the standard library module 'json'"),
        ("1blog", 2, "expected a Python identifier"),
        ("common", 2, "'common' is reserved"),
        ("class", 2, "'class' is a Python keyword"),
        ("hello", 1, "app 'hello': "),  # the generated app: its folder exists
    ],
)
def test_bad_and_taken_names_are_refused_in_one_line(
    project: Path, name: str, code: int, says: str
) -> None:
    before = (project / "server.yml").read_text()
    refused = tranzit("app", name, cwd=project)
    assert refused.returncode == code, refused.stderr
    assert refused.stderr.count("\n") == 1 and says in refused.stderr, refused.stderr
    assert (project / "server.yml").read_text() == before


def test_a_project_the_new_app_would_break_is_left_unchanged(tmp_path: Path) -> None:
    """The new app's rule name is taken by another app: nothing is written."""
    write_project(
        tmp_path, {"other": "def hi(conn):\n    return 'mine'\n\nws_rules = {'news_hello': hi}\n"}
    )
    refused = tranzit("app", "news", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "websocket rule 'news_hello' is defined by both app 'other' and app 'news'" in (
        refused.stderr
    )
    assert (tmp_path / "server.yml").read_text() == "apps: [other]\n"
    assert not (tmp_path / "apps" / "news").exists()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("apps:\n  - a\n  # b is off\nproduction: false\n", ("a", "new")),
        ("apps: [a, b]  # two\n", ("a", "b", "new")),
        ("apps: []\n", ("new",)),
        ("apps:\n", ("new",)),
        ("http_port: 3000\n", ("new",)),
        ("apps:\n    - a\n", ("a", "new")),
    ],
)
def test_server_yml_forms(tmp_path: Path, before: str, after: tuple[str, ...]) -> None:
    edited = _with_app(before, "new")
    assert edited is not None
    (tmp_path / "server.yml").write_text(edited)
    assert load_config(tmp_path / "server.yml", {}).apps == after
