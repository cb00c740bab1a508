"""``tranzit app NAME``: a new app in an existing project.

The app's files come from a small cookiecutter template shipped in the
package (``tranzit/app_template``): ``apps/NAME/`` with routes under
``PATH_PREFIX = "/NAME"``, a page, a static folder and a rule named
``NAME_hello`` (rule names are shared by all apps of a project). ``NAME`` is
added to the ``apps`` list of ``server.yml``; the project is then loaded and
built as ``tranzit check`` does, and if that fails nothing is left changed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from . import __version__
from .config import load_config, locate_project
from .errors import ConfigError, TranzitError

__all__ = ["APP_TEMPLATE", "AppExistsError", "add_app", "app_name_problem"]

APP_TEMPLATE = Path(__file__).parent / "app_template"


class AppExistsError(TranzitError):
    """An app of that name is already in the project (its folder or its ``apps`` entry)."""

    exit_code = 1


def app_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an app, or None: the project template's own rule for its
    first app (its pre_gen hook), so the two cannot drift apart."""
    from .generate import template_checks, template_dir

    problem = template_checks(template_dir()).value_problem("first_app", name)
    return problem.removeprefix("first_app: ") if problem else None


def add_app(name: str, project_dir: str | Path | None = None) -> Path:
    """Create ``apps/<name>/`` and list it in ``server.yml``; returns the app's folder."""
    problem = app_name_problem(name)
    if problem is not None:
        raise ConfigError("tranzit app", "NAME", problem)
    root, config_file = locate_project(project_dir, None)
    # The file's own settings (TRANZIT_APPS would hide what the file lists); sound to begin with.
    config = load_config(config_file, {})
    target = root / "apps" / name
    if target.exists():
        raise AppExistsError(f"app {name!r}: {target} exists already")
    if name in config.apps:
        raise AppExistsError(f"app {name!r} is already listed in {config_file}'s apps")
    original = config_file.read_text(encoding="utf-8")
    listed = _with_app(original, name)
    if listed is None:
        raise TranzitError(
            f"{config_file}: cannot find where to add {name!r} to apps (a block list "
            f"'apps:' followed by '  - name' lines, or 'apps: [a, b]'); add it by hand"
        )
    _render(name, root / "apps")
    try:
        config_file.write_text(listed, encoding="utf-8")
        if load_config(config_file, {}).apps != (*config.apps, name):
            raise TranzitError(f"{config_file}: adding {name!r} to apps did not give the list")
        _check(root, config_file)
    except BaseException:
        config_file.write_text(original, encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _render(name: str, apps_dir: Path) -> None:
    from cookiecutter.main import cookiecutter

    apps_dir.mkdir(exist_ok=True)
    if not (apps_dir / "__init__.py").exists():
        (apps_dir / "__init__.py").write_text("", encoding="utf-8")
    cookiecutter(
        str(APP_TEMPLATE),
        no_input=True,
        output_dir=str(apps_dir),
        extra_context={"app_name": name, "_tranzit_version": __version__},
    )


_BLOCK = re.compile(r"^apps:[ \t]*(#.*)?\n((?:[ \t]+-[^\n]*\n|[ \t]*#[^\n]*\n)*)", re.M)
_FLOW = re.compile(r"^apps:[ \t]*\[([^\]\n]*)\]", re.M)
_EMPTY = re.compile(r"^apps:[ \t]*(\[\s*\])?[ \t]*$", re.M)


def _with_app(text: str, name: str) -> str | None:
    """``text`` (a server.yml) with ``name`` added to ``apps``, comments and layout kept.

    Only the usual forms are edited; the result is read back by the config
    loader, which decides whether the edit was right.
    """
    if not text.endswith("\n"):
        text += "\n"
    flow = _FLOW.search(text)
    if flow is not None:
        items = flow.group(1).strip()
        inside = f"{items}, {name}" if items else name
        return f"{text[: flow.start(1)]}{inside}{text[flow.end(1) :]}"
    block = _BLOCK.search(text)
    if block is not None and block.group(2).strip():
        items = [line for line in block.group(2).splitlines() if line.strip().startswith("-")]
        indent = items[-1][: len(items[-1]) - len(items[-1].lstrip())]
        last = block.start(2) + block.group(2).rindex(items[-1]) + len(items[-1]) + 1
        return f"{text[:last]}{indent}- {name}\n{text[last:]}"
    empty = _EMPTY.search(text)
    if empty is not None:
        return f"{text[: empty.start()]}apps:\n  - {name}{text[empty.end() :]}"
    if not re.search(r"^apps\s*:", text, re.M):
        return f"{text}apps:\n  - {name}\n"
    return None


def _check(root: Path, config_file: Path) -> None:
    """What ``tranzit check`` does: load the project and build its apps."""
    from .app import create_apps
    from .loader import load

    config, project = load(root, config_file, environ={})
    create_apps(config, project)
