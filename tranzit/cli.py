"""The ``tranzit`` command: ``project``, ``run``, ``serve http|ws``, ``check``, ``migrate``.

The only place that turns :class:`~tranzit.errors.TranzitError` into a message
and an exit code: 0 ok, 1 runtime failure (port in use, target exists),
2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import __version__
from .config import ENV_PREFIX, Config, load_config, locate_project
from .errors import ConfigError, TranzitError
from .loader import load
from .project import Project

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "command", None) == "project":
        # KEY=VALUE options may follow flags: `tranzit project NAME --no-input a=b`.
        if args.name and "=" in args.name:  # `tranzit project a=b` without a NAME
            extra.insert(0, args.name)
            args.name = None
        args.overrides = [*args.overrides, *extra]
        extra = [e for e in args.overrides if e.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")  # exits 2
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    _early_logging()
    try:
        result: int = args.func(args)
        return result
    except TranzitError as exc:
        print(f"tranzit: {' '.join(str(exc).splitlines())}", file=sys.stderr)  # one line
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _early_logging() -> None:
    """Warnings while the project loads (before its ``log_level`` is known): one line each
    on stderr, ``tranzit: warning: …``. A runner's own logging set-up replaces this."""
    root = logging.getLogger()
    if root.handlers:  # embedded: the host program's logging stays
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowerLevel("tranzit: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


class _LowerLevel(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace(record.levelname, record.levelname.lower(), 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tranzit", description="An aiohttp framework with a websocket rule protocol."
    )
    parser.add_argument("--version", action="version", version=f"tranzit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    project = sub.add_parser("project", help="generate a new project from the template")
    project.add_argument("name", nargs="?", help="project name (default: the template's)")
    project.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="template options")
    project.add_argument("--no-input", action="store_true", help="do not prompt; use defaults")
    project.add_argument(
        "-o", "--output-dir", type=Path, default=Path("."), help="where to create it"
    )
    project.add_argument(
        "-f", "--force", action="store_true", help="overwrite an existing directory"
    )
    project.set_defaults(func=_cmd_project)

    run = sub.add_parser("run", help="serve the project for development (HTTP + websockets)")
    _project_args(run)
    run.add_argument(
        "--reload",
        action="store_true",
        help="restart when a .py file, a template or the config file of the project changes",
    )
    _address_args(run, "http_host and ws_host", "http_port")
    run.add_argument("--ws-port", metavar="PORT", help="the websocket server's port (ws_port)")
    run.set_defaults(func=_cmd_run)

    serve = sub.add_parser("serve", help="run one role: http (gunicorn) or ws (websocket server)")
    serve.add_argument("role", choices=("http", "ws"))
    _project_args(serve)
    _address_args(serve, "http_host, or ws_host for ws", "http_port, or ws_port for ws")
    serve.set_defaults(func=_cmd_serve)

    app = sub.add_parser("app", help="add an app to the project: apps/NAME/ and server.yml")
    app.add_argument("name", metavar="NAME", help="the app's name (a Python identifier)")
    app.add_argument(
        "-p", "--project", type=Path, default=None, help="project directory (default: here)"
    )
    app.set_defaults(func=_cmd_app)

    check = sub.add_parser("check", help="load the config and apps, report problems, exit")
    _project_args(check)
    check.set_defaults(func=_cmd_check)

    migrate = sub.add_parser(
        "migrate", help="apply the project's database migrations (Alembic, migrations/)"
    )
    _project_args(migrate)
    migrate.add_argument(
        "--revision",
        metavar="REV",
        default="head",
        help="upgrade or downgrade to REV: a revision id, -1, +1, base (default: head)",
    )
    migrate.add_argument(
        "--new", metavar="MESSAGE", help="write a new, empty revision in migrations/versions/"
    )
    migrate.set_defaults(func=_cmd_migrate)

    upgrade = sub.add_parser(
        "upgrade", help="merge the template's changes since generation into this project"
    )
    upgrade.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="new template options")
    upgrade.add_argument(
        "-p", "--project", type=Path, default=None, help="project directory (default: here)"
    )
    upgrade.add_argument("--to", metavar="VERSION", help="template version (default: installed)")
    upgrade.add_argument("--template", type=Path, metavar="DIR", help="the new template")
    upgrade.add_argument(
        "--from-template", type=Path, metavar="DIR", help="the project's (old) template"
    )
    upgrade.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="templates by version (default: ~/.cache/tranzit/templates)",
    )
    upgrade.add_argument(
        "--check", action="store_true", help="exit 1 if the project lags the template; no changes"
    )
    upgrade.set_defaults(func=_cmd_upgrade)
    return parser


def _project_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        "--project",
        type=Path,
        default=None,
        help="project directory (default: $TRANZIT_PROJECT_DIR or the current directory)",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="config file, relative to the project (default: $TRANZIT_CONFIG or server.yml)",
    )


def _address_args(parser: argparse.ArgumentParser, host: str, port: str) -> None:
    parser.add_argument("--host", help=f"bind address (overrides {host})")
    parser.add_argument("--port", help=f"port (overrides {port})")


#: The settings each address option overrides, per command (``serve`` per role).
_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "run": {"host": ("http_host", "ws_host"), "port": ("http_port",), "ws_port": ("ws_port",)},
    "http": {"host": ("http_host",), "port": ("http_port",)},
    "ws": {"host": ("ws_host",), "port": ("ws_port",)},
}


def _overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the command line overrides, and the option that set each one."""
    options = _OPTIONS.get(getattr(args, "role", None) or args.command, {})
    values: dict[str, Any] = {}
    flags: dict[str, str] = {}
    for option, names in options.items():
        value: str | None = getattr(args, option, None)
        for name in names if value is not None else ():
            values[name] = value
            flags[name] = "--" + option.replace("_", "-")
    return values, flags


@contextmanager
def _options_named(flags: dict[str, str]) -> Iterator[None]:
    """A bad option value is reported by its option (``--port: http_port: ...``)."""
    try:
        yield
    except ConfigError as exc:
        # Config.replace names its arguments' origin "keyword argument".
        if exc.key not in flags or exc.source != "keyword argument":
            raise
        raise ConfigError(flags[exc.key], exc.key, exc.message) from None


def _load(args: argparse.Namespace, *, required: bool = True) -> tuple[Config, Project]:
    overrides, flags = _overrides(args)
    with _options_named(flags):
        return load(args.project, args.config, required=required, **overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from .serve import run

    if args.reload:
        return _run_reloading(args)
    config, project = _load(args)
    run(config, project)
    return 0


def _run_reloading(args: argparse.Namespace) -> int:
    """The reloader reads only the config (a broken app is the server's to report, and
    it waits for the next change); the server is ``tranzit run`` without ``--reload``."""
    from .serve import run_reloading

    root, file = locate_project(args.project, args.config)
    overrides, flags = _overrides(args)
    with _options_named(flags):
        config = load_config(file).replace(**overrides)
    command = [sys.executable, "-m", "tranzit", "run", "--project", str(root)]
    command += ["--config", str(file)]
    for option in _OPTIONS["run"]:
        if getattr(args, option) is not None:
            command += ["--" + option.replace("_", "-"), getattr(args, option)]
    run_reloading(command, config, root)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run

    config, project = _load(args, required=False)
    if args.role == "ws":
        run(config, project, http=False, ws=True)
        return 0
    # http: gunicorn with aiohttp's worker, configured in tranzit.gunicorn_conf, which
    # reads the project's settings itself: options reach it as their variables.
    os.environ["TRANZIT_PROJECT_DIR"] = str(project.root)
    if args.config is not None:
        os.environ["TRANZIT_CONFIG"] = str(args.config)
    overrides, _ = _overrides(args)
    for name in overrides:
        os.environ[ENV_PREFIX + name.upper()] = str(getattr(config, name))
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:tranzit.gunicorn_conf",
        "tranzit.app:gunicorn_app",
    ]
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover - exec does not return


def _cmd_check(args: argparse.Namespace) -> int:
    from .app import create_apps

    config, project = _load(args)
    # Refuse what a start refuses: build what `tranzit run` builds (the hub and its
    # backend, both apps, every app's setup), then throw it away.
    create_apps(config, project)
    apps = ", ".join(a.name for a in project.apps) or "none"
    print(f"{config.source}: ok; apps: {apps}; websocket rules: {len(project.rules)}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    """Migrations need the config (``database_url``), not the apps: a project whose
    code cannot load yet may still be migrated."""
    from .db import MIGRATIONS_DIR, location, migrate, new_revision
    from .logs import setup_logging

    root, file = locate_project(args.project, args.config)
    config = load_config(file, required=False)
    directory = root / MIGRATIONS_DIR
    if args.new is not None:
        new_revision(directory, args.new)  # Alembic prints the file it wrote
        return 0
    if config.database_url is None:
        raise ConfigError(
            str(file),
            "database_url",
            "not set: add database_url: postgresql://user:password@host:5432/dbname "
            "to it, or set TRANZIT_DATABASE_URL",
        )
    setup_logging(config.log_level, config.log_format)  # Alembic logs what it applies
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # not what it loads
    heads = migrate(config.database_url, directory, args.revision)
    print(f"{location(config.database_url)}: at revision {', '.join(heads) or 'base'}")
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    try:
        from .newapp import add_app
    except ModuleNotFoundError as exc:  # pragma: no cover - the runtime image has no generator
        raise TranzitError(f"tranzit app needs {exc.name}: pip install cookiecutter") from exc
    target = add_app(args.name, args.project)
    name = args.name
    print(
        f"Created {target} and added {name!r} to apps in server.yml.\n"
        f"Its page is /{name}/ (apps/{name}/templates/index.html), its rule {name}_hello; "
        "tranzit run serves them."
    )
    if os.environ.get("TRANZIT_APPS"):
        print(f"TRANZIT_APPS is set in this environment: add {name} there too.", file=sys.stderr)
    return 0


def _cmd_project(args: argparse.Namespace) -> int:
    try:
        from .generate import generate_project, next_steps, parse_overrides
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "cookiecutter":
            raise
        # The runtime image installs tranzit without its generator.
        raise TranzitError(
            "tranzit project needs cookiecutter, which is not installed here (the runtime "
            "image carries only what serving needs); generate projects where "
            "`pip install tranzit` installed it, or run: pip install cookiecutter"
        ) from exc

    target = generate_project(
        args.name,
        output_dir=args.output_dir,
        extra_context=parse_overrides(args.overrides),
        no_input=args.no_input or not sys.stdin.isatty(),
        force=args.force,
    )
    print(f"Created {target}\n\n{next_steps(target)}")
    return 0


def _cmd_upgrade(args: argparse.Namespace) -> int:
    try:
        from .generate import parse_overrides, template_dir
        from .upgrade import cached_template, lag, read_record, template_version, upgrade_project
    except ModuleNotFoundError as exc:  # pragma: no cover - the runtime image has no generator
        raise TranzitError(f"tranzit upgrade needs {exc.name}: pip install cookiecutter") from exc
    project = (args.project or Path.cwd()).resolve()
    cache = args.cache_dir or Path.home() / ".cache" / "tranzit" / "templates"
    new = args.template or template_dir()
    if args.to and args.template is None and args.to != template_version(new):
        new = cached_template(args.to, cache_dir=cache)
    if args.to and template_version(new) != args.to:
        raise TranzitError(f"--template {new} is template {template_version(new)}, not {args.to}")
    if args.check:
        behind = lag(project, new)
        print(f"{behind}: run tranzit upgrade" if behind else f"{project}: up to date")
        return 1 if behind else 0
    if lag(project, new) is None:
        print(f"{project} is at template {read_record(project)['template_version']}: up to date")
        return 0
    old = args.from_template or cached_template(
        read_record(project)["template_version"], cache_dir=cache
    )
    result = upgrade_project(
        project,
        old_template=old,
        new_template=new,
        overrides=parse_overrides(args.overrides),
        ask=sys.stdin.isatty(),  # options the record lacks: asked at a terminal
    )
    for label, paths in [
        ("updated", result.updated),
        ("merged", result.merged),
        ("added", result.added),
        ("removed", result.removed),
        ("kept (changed or deleted here)", result.kept),
        ("CONFLICT", result.conflicts),
    ]:
        for path in paths:
            print(f"  {label}: {path}")
    print(f"Upgraded {project} from template {result.old_version} to {result.new_version}.")
    if result.conflicts:
        print(
            f"tranzit: {len(result.conflicts)} file(s) with conflicts: "
            f"{', '.join(result.conflicts)}; resolve the <<<<<<< markers, then commit",
            file=sys.stderr,
        )
        return 1
    print("Review with `git diff`, run the tests, then commit.")
    return 0
