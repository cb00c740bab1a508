"""The ``tranzit`` command: ``project``, ``run``, ``serve http|ws``, ``check``.

The only place that turns :class:`~tranzit.errors.TranzitError` into a message
and an exit code: 0 ok, 1 runtime failure (port in use, target exists),
2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import Config
from .errors import TranzitError
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
    try:
        result: int = args.func(args)
        return result
    except TranzitError as exc:
        print(f"tranzit: {' '.join(str(exc).splitlines())}", file=sys.stderr)  # one line
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


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
    run.set_defaults(func=_cmd_run)

    serve = sub.add_parser("serve", help="run one role: http (gunicorn) or ws (websocket server)")
    serve.add_argument("role", choices=("http", "ws"))
    _project_args(serve)
    serve.set_defaults(func=_cmd_serve)

    check = sub.add_parser("check", help="load the config and apps, report problems, exit")
    _project_args(check)
    check.set_defaults(func=_cmd_check)
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


def _load(args: argparse.Namespace, *, required: bool = True) -> tuple[Config, Project]:
    return load(args.project, args.config, required=required)


def _cmd_run(args: argparse.Namespace) -> int:
    from .serve import run

    config, project = _load(args)
    run(config, project)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run

    config, project = _load(args, required=False)
    if args.role == "ws":
        run(config, project, http=False, ws=True)
        return 0
    # http: gunicorn with aiohttp's worker, configured in tranzit.gunicorn_conf.
    os.environ["TRANZIT_PROJECT_DIR"] = str(project.root)
    if args.config is not None:
        os.environ["TRANZIT_CONFIG"] = str(args.config)
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
    from .app import create_app
    from .sessions import check_secret

    config, project = _load(args)
    # Refuse what a start refuses: build the app (routes, static folders, sessions)
    # and check the secret as production would, then throw the app away.
    check_secret(config)
    create_app(config, project)
    apps = ", ".join(a.name for a in project.apps) or "none"
    print(f"{config.source}: ok; apps: {apps}; websocket rules: {len(project.rules)}")
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
