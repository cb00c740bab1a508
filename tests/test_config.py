"""Config: the file, then TRANZIT_* variables; one-line errors naming file and key; exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import clean_env

from tranzit.config import Config, load_config, locate_project
from tranzit.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_old_keys_keep_their_meaning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "http_host: 0.0.0.0\nhttp_port: 8000\nws_server_on: false\nws_host: 0.0.0.0\n"
        "ws_port: 9000\napps: [hello, blog]\nproduction: false\n",
    )
    config = load_config(path, {})
    assert (config.http_host, config.http_port, config.ws_server_on) == ("0.0.0.0", 8000, False)
    assert (config.ws_host, config.ws_port, config.apps) == ("0.0.0.0", 9000, ("hello", "blog"))


def test_defaults_bind_to_loopback(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), {})
    assert config.http_host == "127.0.0.1" and config.ws_host == "127.0.0.1"
    assert (config.http_port, config.ws_port, config.ws_path) == (3000, 19719, "/ws")
    assert config.ws_max_message_size == 1024 * 1024
    assert config.source == (tmp_path / "server.yml").resolve()


def test_environment_overrides_every_key(tmp_path: Path) -> None:
    path = write(tmp_path, "http_port: 8000\napps: [hello]\n")
    env = {
        "TRANZIT_HTTP_PORT": "8001",
        "TRANZIT_HTTP_HOST": "0.0.0.0",
        "TRANZIT_APPS": "hello, blog",
        "TRANZIT_WS_SERVER_ON": "no",
        "TRANZIT_PRODUCTION": "true",
        "TRANZIT_SECRET_KEY": "s3cret",
        "TRANZIT_WS_ALLOWED_ORIGINS": "https://a.example,https://b.example",
        "TRANZIT_WS_HEARTBEAT": "2.5",
        "TRANZIT_LOG_LEVEL": "DEBUG",
        "TRANZIT_WS_PATH": "/socket/",
    }
    config = load_config(path, env)
    assert config.http_port == 8001 and config.http_host == "0.0.0.0"
    assert config.apps == ("hello", "blog")
    assert config.ws_server_on is False and config.production is True
    assert config.secret_key == "s3cret"
    assert config.ws_allowed_origins == ("https://a.example", "https://b.example")
    assert config.ws_heartbeat == 2.5 and config.log_level == "debug"
    assert config.ws_path == "/socket"
    every_key = {f.upper() for f in Config.__dataclass_fields__ if f != "source"}
    for key in every_key:  # each key has an environment variable that is read
        name = key.lower()
        assert hasattr(config, name)


def test_sessions_is_true_false_or_auto(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}).sessions is None
    assert load_config(write(tmp_path, "sessions: auto\n"), {}).sessions is None
    assert load_config(write(tmp_path, "sessions: true\n"), {}).sessions is True
    assert load_config(write(tmp_path, ""), {"TRANZIT_SESSIONS": "off"}).sessions is False


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), {})
    with pytest.raises(AttributeError):
        config.http_port = 1  # type: ignore[misc]
    assert config.replace(http_port=4000).http_port == 4000


@pytest.mark.parametrize(
    ("text", "env", "source", "key", "expected", "found"),
    [
        ("http_port: 70000\n", {}, "server.yml", "http_port", "port number", "70000"),
        ("http_port: abc\n", {}, "server.yml", "http_port", "port number", "'abc'"),
        ("http_port: 0\n", {}, "server.yml", "http_port", "from 1 to 65535", "0"),
        ("htp_port: 3000\n", {}, "server.yml", "htp_port", "unknown key", "http_port"),
        ("apps: hello world\n", {}, "server.yml", "apps", "Python identifiers", "'hello world'"),
        ("apps: [a, a]\n", {}, "server.yml", "apps", "each app once", "a"),
        ("production: maybe\n", {}, "server.yml", "production", "true or false", "'maybe'"),
        ("ws_port: 3000\n", {}, "server.yml", "ws_port", "other than http_port", "3000"),
        ("", {"TRANZIT_HTTP_PORT": "x"}, "TRANZIT_HTTP_PORT", "http_port", "port", "'x'"),
        ("", {"TRANZIT_WS_HEARTBEAT": "-1"}, "TRANZIT_WS_HEARTBEAT", "ws_heartbeat", "sec", "-1"),
        ("", {"TRANZIT_LOG_LEVEL": "loud"}, "TRANZIT_LOG_LEVEL", "log_level", "debug", "'loud'"),
        (
            "sessions: sometimes\n",
            {},
            "server.yml",
            "sessions",
            "true, false or auto",
            "'sometimes'",
        ),
    ],
)
def test_errors_name_source_key_expected_and_found(
    tmp_path: Path,
    text: str,
    env: dict[str, str],
    source: str,
    key: str,
    expected: str,
    found: str,
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env)
    message = str(info.value)
    assert "\n" not in message
    assert source in message and key in message
    assert expected in message and found in message


def test_missing_file_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.yml: file not found"):
        load_config(tmp_path / "server.yml", {})
    assert load_config(tmp_path / "server.yml", {}, required=False).http_port == 3000
    with pytest.raises(ConfigError, match=r"server\.yml: invalid YAML at line 2, column"):
        load_config(write(tmp_path, "http_port: 1\n  bad: [\n"), {})
    with pytest.raises(ConfigError, match="expected a mapping of settings, found list"):
        load_config(write(tmp_path, "- a\n- b\n"), {})


def test_locate_project(tmp_path: Path) -> None:
    assert locate_project(tmp_path, None, {}) == (tmp_path, tmp_path / "server.yml")
    env = {"TRANZIT_PROJECT_DIR": str(tmp_path), "TRANZIT_CONFIG": "prod.yml"}
    assert locate_project(None, None, env) == (tmp_path, tmp_path / "prod.yml")


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        (None, {}, "server.yml: file not found"),
        ("http_port: [\n", {}, "server.yml: invalid YAML"),
        ("colour: red\n", {}, "server.yml: colour: unknown key"),
        ("http_port: '3000'\nws_port: 99999\n", {}, "server.yml: ws_port: expected a port"),
        ("", {"TRANZIT_WS_PORT": "-5"}, "environment TRANZIT_WS_PORT: ws_port: expected a port"),
    ],
)
def test_cli_reports_one_line_and_exits_2(
    tmp_path: Path, text: str | None, env: dict[str, str], needle: str
) -> None:
    if text is not None:
        write(tmp_path, text)
    for command in (["run"], ["check"], ["serve", "ws"]):
        if command == ["serve", "ws"] and text is None:
            continue  # the ws role runs with defaults when the file is absent
        result = subprocess.run(
            [sys.executable, "-m", "tranzit", *command, "--project", str(tmp_path)],
            env=clean_env(**env),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tranzit: "), result.stderr
        assert needle in lines[0]
        assert "Traceback" not in result.stderr


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "apps: [a]\nhttp_port: 1\n\napps: [b]\n"), {})
    assert "server.yml: apps: expected each key once, found it on line 1 and line 4" in str(
        info.value
    )
    # Aliases within the limits still work.
    text = "ws_allowed_origins: &o [https://a.example]\nallowed_hosts: *o\nhttp_host: &h 0.0.0.0\n"
    config = load_config(write(tmp_path, text + "ws_host: *h\n"), {})
    assert config.allowed_hosts == ("https://a.example",) and config.ws_host == "0.0.0.0"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("apps: &a [*a]\n", "no alias inside its own anchor"),
        ("apps: " + "[" * 100 + "]" * 100 + "\n", "nested at most 32 levels"),
        ("apps: {" * 50 + "}" * 50 + "\n", "nested at most 32 levels"),
        ("http_port: " + "9" * 5000 + "\n", "line 1, column 12: cannot read the value"),
        ("http_port: 2024-13-45\n", "line 1, column 12: cannot read the value"),
        (
            "a: &a [" + ", ".join(["x"] * 200) + "]\napps: [" + ", ".join(["*a"] * 60) + "]\n",
            "at most 10000 values once aliases are expanded",
        ),
    ],
)
def test_hostile_yaml_is_refused_in_one_short_line(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    message = str(info.value)
    assert needle in message and "\n" not in message and len(message) < 300


def test_values_in_messages_are_cut_to_one_short_line(tmp_path: Path) -> None:
    text = "http_port: '" + "9" * 5000 + "'\nws_path: [" + ", ".join(["x"] * 3000) + "]\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert "http_port: expected a port number" in str(info.value)
    assert len(str(info.value)) < 300
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""), {"TRANZIT_LOG_LEVEL": "x\n" * 5000})
    message = str(info.value)
    assert "environment TRANZIT_LOG_LEVEL: log_level" in message
    assert "\n" not in message and len(message) < 300


@pytest.mark.parametrize(
    ("key", "too_short", "shortest"),
    [
        ("ws_heartbeat", 0.9, 1.0),
        ("ws_send_timeout", 0.05, 0.1),
        ("header_timeout", 0.05, 0.1),
        ("body_timeout", 0.05, 0.1),
        ("keepalive_timeout", 0.05, 0.1),
        ("broadcast_timeout", 0.05, 0.1),
        ("shutdown_timeout", 0.05, 0.1),
    ],
)
def test_seconds_have_sane_minimums(
    tmp_path: Path, key: str, too_short: float, shortest: float
) -> None:
    with pytest.raises(
        ConfigError, match=rf"{key}: expected a number of seconds from {shortest:g}"
    ):
        load_config(write(tmp_path, f"{key}: {too_short}\n"), {})
    assert getattr(load_config(write(tmp_path, f"{key}: {shortest}\n"), {}), key) == shortest


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://redis:6379", "expected a Redis URL"),
        ("redis://redis:port/0", "Port could not be cast to integer"),
        ("redis://:hunter2@redis:x/0", "found 'redis://***@redis:x/0'"),
    ],
)
def test_broadcast_url_is_checked_when_read(tmp_path: Path, url: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="broadcast_url") as refused:
        load_config(write(tmp_path, f"broadcast_url: '{url}'\n"), {})
    assert expected in str(refused.value)
    assert "hunter2" not in str(refused.value)  # a password is never echoed
    with pytest.raises(ConfigError, match="environment TRANZIT_BROADCAST_URL"):
        load_config(write(tmp_path, ""), {"TRANZIT_BROADCAST_URL": url})
    good = "redis://redis:6379/0"
    assert load_config(write(tmp_path, ""), {"TRANZIT_BROADCAST_URL": good}).broadcast_url == good


def test_misspelt_tranzit_variables_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import tranzit

    (tmp_path / "server.yml").write_text("")
    environ = {
        "TRANZIT_WS_PROT": "9000",
        "TRANZIT_LOGLEVEL": "debug",
        "TRANZIT_HTTP_PORT": "8000",  # a setting
        "TRANZIT_PROJECT_DIR": str(tmp_path),  # not a setting, but tranzit's
        "TRANZIT_NGINX_SERVER_NAMES": "example.com",  # the nginx image's
    }
    with caplog.at_level("WARNING", logger="tranzit"):
        config, _ = tranzit.load(tmp_path, environ=environ)
    assert config.http_port == 8000
    assert sorted(r.getMessage() for r in caplog.records) == [
        "environment TRANZIT_LOGLEVEL is not a tranzit setting "
        "(did you mean 'TRANZIT_LOG_LEVEL'?); ignored",
        "environment TRANZIT_WS_PROT is not a tranzit setting "
        "(did you mean 'TRANZIT_WS_PORT'?); ignored",
    ]
