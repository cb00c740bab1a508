"""Hostile or broken server.yml and routes.py: one line, exit 2, quickly, from check and run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import clean_env, free_port

#: 483 bytes that expand to 9**9 strings ("billion laughs").
ALIAS_BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]"
            for prev, name in zip("abcdefg", "bcdefgh", strict=True)
        ),
        f"apps: [{', '.join(['*h'] * 9)}]",
        "",
    ]
)

STRONG = "Zx0-vR8_qL2mN5pT7wY9aB1cD3eF4gH6iJ8kM0nP2rS"


def tranzit(
    project: Path, command: str = "check", timeout: float = 10, **env: str
) -> subprocess.CompletedProcess[str]:
    """``tranzit COMMAND --project PROJECT``; one that is still running after ``timeout``
    (a ``run`` that started instead of refusing) fails the test."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "tranzit", command, "--project", str(project)],
            env=clean_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"tranzit {command} still running after {timeout} s")


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tranzit: "), result.stderr[-2000:]
    assert len(lines[0]) < 400, lines[0]
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def project(tmp_path: Path, server_yml: str, routes: str | None = None) -> Path:
    (tmp_path / "server.yml").write_text(server_yml, encoding="utf-8")
    if routes is not None:
        app = tmp_path / "apps" / "shop"
        app.mkdir(parents=True)
        (tmp_path / "apps" / "__init__.py").write_text("")
        (app / "__init__.py").write_text("")
        (app / "routes.py").write_text(routes, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("command", ["check", "run"])
def test_yaml_alias_bomb_is_refused_within_a_second(tmp_path: Path, command: str) -> None:
    assert len(ALIAS_BOMB) < 500
    start = time.monotonic()
    result = tranzit(project(tmp_path, ALIAS_BOMB), command, timeout=25)
    elapsed = time.monotonic() - start
    assert_one_line_exit_2(result, "server.yml", "invalid YAML", "aliases")
    assert elapsed < 1.0 + 1.5, elapsed  # the refusal itself, plus starting Python


def test_a_large_wrong_value_is_reported_short(tmp_path: Path) -> None:
    # About 7,400 strings through aliases: under the expansion limit, so the value
    # reaches the type check, whose message shows only the start of it.
    lol = ", ".join(['"lol"'] * 9)
    text = (
        f"apps: [&a [{lol}], &b [{', '.join(['*a'] * 9)}], &c [{', '.join(['*b'] * 9)}],"
        f" [{', '.join(['*c'] * 9)}]]\n"
    )
    line = assert_one_line_exit_2(tranzit(project(tmp_path, text)), "apps", "list of strings")
    assert len(line) < 300 and "lol" in line


def test_deeply_nested_yaml_is_one_line(tmp_path: Path) -> None:
    result = tranzit(project(tmp_path, "apps: " + "[" * 10_000 + "\n"))
    assert_one_line_exit_2(result, "server.yml", "invalid YAML at line 1", "nested")


def test_duplicate_key_names_the_key_and_both_lines(tmp_path: Path) -> None:
    text = "http_port: 8000\nws_port: 9000\nhttp_port: 8001\n"
    result = tranzit(project(tmp_path, text))
    assert_one_line_exit_2(result, "server.yml: http_port", "line 1", "line 3")


@pytest.mark.parametrize(
    ("routes", "needles"),
    [
        ('routes = {"/{x": handler}\n', ("app 'shop'", "'/{x'")),
        ('routes = {"/{id:[}": View}\n', ("app 'shop'", "'/{id:[}'")),
        ('PATH_PREFIX = "api"\nroutes = {"/x": handler}\n', ("app 'shop'", "PATH_PREFIX", "'api'")),
    ],
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_route_pattern_is_one_line_naming_app_and_pattern(
    tmp_path: Path, routes: str, needles: tuple[str, ...], command: str
) -> None:
    code = (
        "from aiohttp import web\n\n"
        "async def handler(request):\n    return web.Response()\n\n"
        "class View:\n    async def get(self, request):\n        return web.Response()\n\n"
    )
    server = f"apps: [shop]\nhttp_port: {free_port()}\nws_server_on: false\n"
    root = project(tmp_path, server, code + routes)
    assert_one_line_exit_2(tranzit(root, command), *needles)


@pytest.mark.parametrize(
    ("key", "value", "low"),
    [
        ("ws_heartbeat", "0.0001", "from 1 to 3600"),
        ("ws_send_timeout", "0.001", "from 0.1 to 3600"),
        ("header_timeout", "0.01", "from 0.1 to 3600"),
        ("shutdown_timeout", "0.0001", "from 0.1 to 3600"),
    ],
)
def test_absurdly_short_seconds_are_refused_naming_the_variable(
    tmp_path: Path, key: str, value: str, low: str
) -> None:
    result = tranzit(project(tmp_path, f"{key}: {value}\n"))
    assert_one_line_exit_2(result, f"server.yml: {key}", low, value)
    var = f"TRANZIT_{key.upper()}"
    result = tranzit(project(tmp_path, ""), **{var: value})
    assert_one_line_exit_2(result, f"environment {var}: {key}", low)


@pytest.mark.parametrize(
    "secret", [None, "a", "a" * 64, "password" * 4, "0123456789abcdefghijklmnopqrstu"]
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_production_refuses_a_weak_secret_and_says_how_to_make_one(
    tmp_path: Path, secret: str | None, command: str
) -> None:
    env = {} if secret is None else {"TRANZIT_SECRET_KEY": secret}
    root = project(tmp_path, f"production: true\nhttp_port: {free_port()}\nws_server_on: false\n")
    result = tranzit(root, command, **env)
    line = assert_one_line_exit_2(result, "secret_key", "secrets.token_urlsafe(32)")
    if secret and len(secret) > 8:
        assert secret not in line  # the message never repeats the secret


def test_weak_secret_in_development_warns_once(tmp_path: Path) -> None:
    result = tranzit(project(tmp_path, ""), TRANZIT_SECRET_KEY="a")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "secret_key" in line]
    assert len(warnings) == 1 and "weak" in warnings[0], result.stderr
    assert "Traceback" not in result.stderr
    # and a proper secret passes in production
    root = project(tmp_path, "production: true\n")
    result = tranzit(root, TRANZIT_SECRET_KEY=STRONG)
    assert result.returncode == 0, result.stderr
    assert ": ok;" in result.stdout and result.stderr == ""
