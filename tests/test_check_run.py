"""``tranzit check`` refuses exactly what ``tranzit run`` refuses, with the same line and exit code.

Every broken project below is given to both commands as real processes; ``run``
must stop with the error before it serves anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import clean_env, free_port, write_project

GOOD_ROUTES = "routes = {}\nws_rules = {}\n"

#: name -> (server.yml, {app: routes.py}, extra environment, what the error says)
BROKEN: dict[str, tuple[str, dict[str, str], dict[str, str], str]] = {
    "production without a secret": (
        "production: true\n",
        {"a": GOOD_ROUTES},
        {},
        "secret_key: expected a secret when production is true",
    ),
    "production with a weak secret": (
        "production: true\nsecret_key: abcabcabcabcabcabcabcabcabcabcabcabc\n",
        {"a": GOOD_ROUTES},
        {},
        "secret_key: expected a secret of at least 32 characters",
    ),
    "a broadcast_url that is not Redis": (
        "broadcast_url: http://redis:6379\n",
        {"a": GOOD_ROUTES},
        {},
        "broadcast_url: expected a Redis URL",
    ),
    "a bad broadcast_url from the environment": (
        "",
        {"a": GOOD_ROUTES},
        {"TRANZIT_BROADCAST_URL": "redis://redis:port/0"},
        "environment TRANZIT_BROADCAST_URL: broadcast_url: expected a Redis URL",
    ),
    "ws_port equal to http_port": (
        "http_port: 4000\nws_port: 4000\n",
        {"a": GOOD_ROUTES},
        {"TRANZIT_HTTP_PORT": "", "TRANZIT_WS_PORT": ""},
        "ws_port: expected a port other than http_port (4000), found 4000",
    ),
    "an unknown key": ("htp_port: 1\n", {"a": GOOD_ROUTES}, {}, "did you mean 'http_port'?"),
    "an import error": (
        "",
        {"a": "import os\nroutes = {'/': nope}\n"},
        {},
        "failed at apps/a/routes.py:2: NameError",
    ),
    "a route defined twice": (
        "",
        {"a": "routes = {'/': lambda r: None}\n", "b": "routes = {'/': lambda r: None}\n"},
        {},
        "route '/' is defined by both app 'a' and app 'b'",
    ),
    "a bad route pattern": (
        "",
        {"a": "async def v(request):\n    pass\nroutes = {'/{bad': v}\n"},
        {},
        "/{bad",
    ),
    "a PATH_PREFIX without a slash": (
        "",
        {"a": "PATH_PREFIX = 'api'\nroutes = {}\n"},
        {},
        "PATH_PREFIX: expected '' or a path starting with '/'",
    ),
    "a setup(app) that raises": (
        "",
        {"a": "def setup(app):\n    raise RuntimeError('no database')\n"},
        {},
        "app 'a': setup(app) failed at",
    ),
    "two connect hooks": (
        "",
        {"a": "def ws_connect(r):\n    return 1\n", "b": "def ws_connect(r):\n    return 2\n"},
        {},
        "ws_connect is defined by both app 'a' and app 'b'",
    ),
}


def tranzit(command: str, root: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    ports = {"TRANZIT_HTTP_PORT": str(free_port()), "TRANZIT_WS_PORT": str(free_port())}
    merged = {**ports, **env}
    environ = clean_env(**{k: v for k, v in merged.items() if v})
    done = subprocess.run(
        [sys.executable, "-m", "tranzit", command, "--project", str(root)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("tranzit: ")]
    return done.returncode, errors


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_refuses_what_run_refuses(tmp_path: Path, case: str) -> None:
    server_yml, apps, env, expected = BROKEN[case]
    root = write_project(tmp_path / "project", apps, server_yml)
    checked = tranzit("check", root, env)
    ran = tranzit("run", root, env)
    assert checked[0] == 2, checked
    assert len(checked[1]) == 1 and expected in checked[1][0], checked
    assert ran == checked  # the same exit code and the same one line


def test_check_says_ok_for_what_run_serves(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project", {"a": GOOD_ROUTES})
    code, errors = tranzit("check", root, {})
    assert (code, errors) == (0, [])
