"""Configuration: built once from ``server.yml``, then ``TRANZIT_*`` environment variables.

The result is a frozen :class:`Config`. Nothing else in tranzit reads YAML or the
environment; building a config has no side effects.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from . import limits
from .errors import ConfigError, show, show_key

__all__ = [
    "CONFIG_FILE",
    "ENV_PREFIX",
    "Config",
    "load_config",
    "locate_project",
    "unknown_variables",
]

CONFIG_FILE = "server.yml"
ENV_PREFIX = "TRANZIT_"
#: ``/static/common`` and ``/static/tranzit`` are taken by the project and the framework.
RESERVED_APP_NAMES = ("common", "tranzit")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")

#: A server.yml is a few dozen values; aliases may not make it much bigger ("billion
#: laughs": a few hundred bytes of nested aliases that expand to gigabytes).
MAX_YAML_VALUES = 10_000
#: Settings nest two levels deep; PyYAML's composer recurses once per level.
MAX_YAML_DEPTH = 32

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of a tranzit project. See ``docs/configuration.md``."""

    # The original keys, with their old meaning. Hosts now default to loopback.
    http_host: str = "127.0.0.1"
    http_port: int = 3000
    ws_server_on: bool = True
    ws_host: str = "127.0.0.1"
    ws_port: int = 19719
    apps: tuple[str, ...] = ()
    production: bool = False
    # New keys.
    secret_key: str | None = field(default=None, repr=False)
    ws_path: str = "/ws"
    ws_allowed_origins: tuple[str, ...] = ()
    ws_max_message_size: int = limits.MAX_MESSAGE_SIZE
    ws_heartbeat: float = limits.HEARTBEAT
    ws_max_tasks: int = limits.MAX_TASKS
    ws_send_queue: int = limits.SEND_QUEUE
    ws_send_buffer: int = limits.SEND_BUFFER
    ws_send_buffer_total: int = limits.SEND_BUFFER_TOTAL
    ws_send_timeout: float = limits.SEND_TIMEOUT
    #: Messages kept per group for clients that reconnect (0: none), and for how long.
    ws_history_size: int = limits.HISTORY_SIZE
    ws_history_age: float = limits.HISTORY_AGE
    #: Seconds over which a stopping websocket server closes its clients (0: all at once).
    ws_drain_time: float = limits.DRAIN_TIME
    #: Serve Prometheus metrics at ``/metrics`` on both roles.
    metrics: bool = False
    #: Host names requests may carry (``Host``); empty: localhost names and the
    #: addresses the servers bind. ``*`` allows any, ``.example.com`` a domain.
    allowed_hosts: tuple[str, ...] = ()
    max_body_size: int = limits.MAX_BODY_SIZE
    header_timeout: float = limits.HEADER_TIMEOUT
    body_timeout: float = limits.BODY_TIMEOUT
    keepalive_timeout: float = limits.KEEPALIVE_TIMEOUT
    log_level: LogLevel = "info"
    #: ``text`` (one readable line each) or ``json`` (one JSON object per line).
    log_format: LogFormat = "text"
    #: Proxies whose ``X-Forwarded-For/Proto/Host`` are believed: addresses,
    #: networks (``172.16.0.0/12``) or host names; empty: none, ``*``: any.
    trusted_proxies: tuple[str, ...] = ()
    static_url: str = "/static"
    shutdown_timeout: float = 1.5
    broadcast_url: str | None = None
    broadcast_timeout: float = limits.BROADCAST_TIMEOUT
    #: Postgres (``postgresql://user:password@host:5432/dbname``): each app's pool,
    #: ``app[tranzit.db.DB]``, and ``tranzit migrate``.
    database_url: str | None = field(default=None, repr=False)
    #: Cookie sessions: None ("auto") installs them when the project uses aiohttp_session.
    sessions: bool | None = None
    # Where the values came from (not a setting): the file, or None when built in code.
    source: Path | None = field(default=None, compare=False)

    def replace(self, **changes: Any) -> Config:
        """A copy with some settings changed (validated like the file's)."""
        merged = {f.name: getattr(self, f.name) for f in _settings()}
        merged.update(changes)
        return _build(merged, {k: "keyword argument" for k in changes}, self.source)


def _settings() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Config) if f.name != "source"]


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    required: bool = True,
) -> Config:
    """Read ``path`` (a ``server.yml``), then apply ``TRANZIT_*`` variables from ``environ``.

    ``environ`` defaults to ``os.environ``. With ``required=False`` a missing
    file means "defaults"; otherwise it is a :class:`ConfigError`.
    """
    file = Path(path)
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if file.exists() or required:
        values = _read_yaml(file)
        origins = dict.fromkeys(values, str(file))
    names = {f.name for f in _settings()}
    for name in names:
        var = ENV_PREFIX + name.upper()
        if var in env:
            values[name] = _from_env(var, env[var], name)
            origins[name] = f"environment {var}"
    return _build(values, origins, file.resolve())


#: ``TRANZIT_*`` variables that are not settings: where the project is, and what the
#: runtime image, the nginx image, compose files and the test suite read.
OTHER_VARIABLES = frozenset(
    {"PROJECT_DIR", "CONFIG", "VENV", "STATIC", "RUNTIME_IMAGE", "NGINX_IMAGE", "REDIS_IMAGE"}
    | {"PYTHON_IMAGE", "PUBLISH_PORT", "OFFLINE_BASE", "EXAMPLE_DIR", "WEB_REPLICAS"}
    | {"WS_REPLICAS"}
)
OTHER_PREFIXES = ("NGINX_", "BUILD_", "TEST_")


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``TRANZIT_*`` variable that is neither a setting nor one of
    :data:`OTHER_VARIABLES`, with the setting it probably meant."""
    env = os.environ if environ is None else environ
    names = {f.name.upper() for f in _settings()}
    warnings = []
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX) :]
        if name in names or name in OTHER_VARIABLES or name.startswith(OTHER_PREFIXES):
            continue
        hint = _close_match(name, names | OTHER_VARIABLES)
        hint = hint.replace("(did you mean '", f"(did you mean '{ENV_PREFIX}")
        warnings.append(f"environment {show_key(var, 60)} is not a tranzit setting{hint}; ignored")
    return warnings


def locate_project(
    project_dir: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Path, Path]:
    """The project directory and its config file.

    Explicit arguments win, then ``TRANZIT_PROJECT_DIR`` / ``TRANZIT_CONFIG``,
    then the working directory and ``server.yml`` in it. A relative config file
    is taken inside the project directory.
    """
    env = os.environ if environ is None else environ
    root = Path(project_dir or env.get(ENV_PREFIX + "PROJECT_DIR") or ".").resolve()
    file = Path(config_file or env.get(ENV_PREFIX + "CONFIG") or CONFIG_FILE)
    return root, file if file.is_absolute() else root / file


class _Refused(Exception):
    """A document PyYAML would accept but a settings file must not be."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class _SettingsLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and bounds nesting.

    The pure-Python loader, so that composing can be checked: a settings file
    is small, its speed does not matter.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Refused(
                    None,
                    f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                    f"expected values nested at most {MAX_YAML_DEPTH} levels deep",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:  # 5000 digits, 2024-13-45
            mark = node.start_mark
            raise _Refused(
                None,
                f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                f"cannot read the value: {show_key(str(exc), 100)}",
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # merge keys (``<<``) override on purpose
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _Refused(
                    str(key),
                    f"expected each key once, found it on line {seen[key]} and line {line}",
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node) -> int:
    """How many values ``node`` holds once its aliases are expanded (shared nodes counted
    each time they are used, computed once each); over the limit raises ``_Refused``."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) in sizes:
            if sizes[id(n)] < 0:
                raise _Refused(None, "invalid YAML: expected no alias inside its own anchor")
            return sizes[id(n)]
        sizes[id(n)] = -1
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(item) for item in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        if total > MAX_YAML_VALUES:
            raise _Refused(
                None,
                f"invalid YAML: expected at most {MAX_YAML_VALUES} values once aliases "
                "are expanded, found more",
            )
        sizes[id(n)] = total
        return total

    return size(node)


def _parse_yaml(text: str) -> Any:
    loader = _SettingsLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(file: Path) -> dict[str, Any]:
    where = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(where, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where, None, f"cannot read: {exc}") from None
    try:
        data = _parse_yaml(text)
    except _Refused as exc:
        raise ConfigError(where, exc.key and show_key(exc.key), exc.message) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(where, None, f"invalid YAML{at}: {show_key(problem)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            where, None, f"expected a mapping of settings, found {type(data).__name__}"
        )
    names = {f.name for f in _settings()}
    for key in data:
        if not isinstance(key, str) or key not in names:
            hint = _close_match(key, names)
            raise ConfigError(
                where,
                show_key(key),
                f"unknown key{hint}; expected one of: {', '.join(sorted(names))}",
            )
    return dict(data)


def _close_match(key: Any, names: set[str]) -> str:
    import difflib

    if not isinstance(key, str) or len(key) > 100:
        return ""
    match = difflib.get_close_matches(key, sorted(names), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _from_env(var: str, raw: str, name: str) -> Any:
    """Environment values are strings; lists are comma separated."""
    kind = _field_type(name)
    if kind == "tuple":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind in ("str|None", "redis_url", "postgres_url"):
        return raw or None
    return raw  # _build converts and validates with the variable name as source


def _field_type(name: str) -> str:
    return {
        "http_host": "str",
        "http_port": "port",
        "ws_server_on": "bool",
        "ws_host": "str",
        "ws_port": "port",
        "apps": "tuple",
        "production": "bool",
        "secret_key": "str|None",
        "ws_path": "path",
        "ws_allowed_origins": "tuple",
        "ws_max_message_size": "size",
        "ws_heartbeat": "heartbeat",
        "ws_max_tasks": "count",
        "ws_send_queue": "count",
        "ws_send_buffer": "size",
        "ws_send_buffer_total": "size",
        "ws_send_timeout": "seconds",
        "ws_history_size": "count0",
        "ws_history_age": "seconds",
        "ws_drain_time": "seconds0",
        "metrics": "bool",
        "allowed_hosts": "tuple",
        "max_body_size": "size",
        "header_timeout": "seconds",
        "body_timeout": "seconds",
        "keepalive_timeout": "seconds",
        "log_level": "level",
        "log_format": "format",
        "trusted_proxies": "tuple",
        "static_url": "path",
        "shutdown_timeout": "seconds",
        "broadcast_url": "redis_url",
        "broadcast_timeout": "seconds",
        "database_url": "postgres_url",
        "sessions": "auto",
    }[name]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, value: Any) -> Any:
    """Check one value; raise ValueError('expected ..., found ...') on a mismatch."""
    kind = _field_type(name)
    found = f"found {show(value)}"
    if kind == "auto":
        if value is None or (isinstance(value, str) and value.lower() == "auto"):
            return None
        kind = "bool"
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        choices = "true, false or auto" if _field_type(name) == "auto" else "true or false"
        raise ValueError(f"expected {choices}, {found}")
    if kind in ("port", "size", "count", "count0"):
        number = _as_int(value)
        low, high = {
            "port": (1, 65535),
            "size": (1, 2**31),
            "count": (1, 100_000),
            "count0": (0, 1_000_000),
        }[kind]
        if number is None or not low <= number <= high:
            what = "a port number" if kind == "port" else "an integer"
            raise ValueError(f"expected {what} from {low} to {high}, {found}")
        return number
    if kind in ("seconds", "seconds0", "heartbeat"):
        # Below these, a heartbeat's pong deadline (half of it) or a timeout is shorter
        # than an ordinary round trip, and every client is dropped.
        shortest = {"seconds": 0.1, "seconds0": 0.0, "heartbeat": 1.0}[kind]
        seconds = _as_float(value)
        if seconds is None or not shortest <= seconds <= 3600:
            raise ValueError(f"expected a number of seconds from {shortest:g} to 3600, {found}")
        return seconds
    if kind == "tuple":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"expected a list of strings, {found}")
        return tuple(items)
    if kind == "level":
        if isinstance(value, str) and value.lower() in LOG_LEVELS:
            return value.lower()
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, {found}")
    if kind == "format":
        if isinstance(value, str) and value.lower() in LOG_FORMATS:
            return value.lower()
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, {found}")
    if kind == "path":
        if isinstance(value, str) and value.startswith("/"):
            return value.rstrip("/") or "/"
        raise ValueError(f"expected a URL path starting with '/', {found}")
    if kind == "redis_url":
        if value is None or value == "":
            return None
        return _redis_url(value, found)
    if kind == "postgres_url":
        if value is None or value == "":
            return None
        return _postgres_url(value, found)
    if kind == "str|None":
        if value is None or isinstance(value, str):
            return value or None
        raise ValueError(f"expected a string, {found}")
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"expected a non-empty string, {found}")


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(value: Any, found: str) -> str:
    """A Redis URL as redis-py reads it (when redis is installed: the port, the db)."""
    expected = "expected a Redis URL (redis://host:port/db, rediss://… or unix://…)"
    if isinstance(value, str) and "@" in value:  # never echo a password
        found = f"found {show(value[: value.find('//') + 2] + '***' + value[value.rfind('@') :])}"
    if not isinstance(value, str) or not value.startswith(REDIS_SCHEMES):
        raise ValueError(f"{expected}, {found}")
    try:
        from redis.connection import parse_url
    except ImportError:  # the backend says what to install when it starts
        return value
    try:
        parse_url(value)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"{expected}, {found}: {show_key(str(exc), 80)}") from None
    return value


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _postgres_url(value: Any, found: str) -> str:
    """A Postgres URL as asyncpg reads it: its scheme, and a numeric port if any."""
    expected = "expected a PostgreSQL URL (postgresql://user:password@host:5432/dbname)"
    if isinstance(value, str) and "@" in value:  # never echo a password
        found = f"found {show(value[: value.find('//') + 2] + '***' + value[value.rfind('@') :])}"
    if not isinstance(value, str) or not value.startswith(POSTGRES_SCHEMES):
        raise ValueError(f"{expected}, {found}")
    try:
        port = urllib.parse.urlsplit(value).port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        raise ValueError(f"{expected}, {found}: the port is not a number from 1 to 65535")
    return value


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value) <= 20:
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _build(values: dict[str, Any], origins: dict[str, str], source: Path | None) -> Config:
    converted: dict[str, Any] = {}
    for name, value in values.items():
        try:
            converted[name] = _convert(name, value)
        except ValueError as exc:
            raise ConfigError(origins.get(name, "configuration"), name, str(exc)) from None
    apps = converted.get("apps", ())
    if len(set(apps)) != len(apps):
        twice = sorted(a for a, n in Counter(apps).items() if n > 1)
        raise ConfigError(
            origins.get("apps", "configuration"),
            "apps",
            f"expected each app once, found {show(', '.join(twice))} more than once",
        )
    for name in apps:
        if not name.isidentifier() or name in RESERVED_APP_NAMES:
            raise ConfigError(
                origins.get("apps", "configuration"),
                "apps",
                f"expected app names that are Python identifiers other than "
                f"{', '.join(RESERVED_APP_NAMES)}, found {show(name)}",
            )
    config = Config(**converted, source=source)
    if (
        config.ws_server_on
        and config.ws_port == config.http_port
        and (config.ws_host == config.http_host)
    ):
        raise ConfigError(
            origins.get("ws_port", "configuration"),
            "ws_port",
            f"expected a port other than http_port ({config.http_port}), found {config.ws_port}",
        )
    return config
