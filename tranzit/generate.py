"""``tranzit project``: a new project from the cookiecutter-tranzit template.

The template ships inside the wheel as ``tranzit/_template`` (an editable
install uses ``cookiecutter-tranzit/`` of the checkout), so generating needs
neither network nor git. The steps are cookiecutter's own (context, prompts,
files, hooks); this module adds what the CLI needs around them: unknown
options, bad values and an existing target are reported as
:class:`~tranzit.errors.TranzitError` before anything is written.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from cookiecutter.config import get_user_config
from cookiecutter.exceptions import FailedHookException
from cookiecutter.generate import generate_context, generate_files
from cookiecutter.prompt import prompt_for_config
from cookiecutter.utils import create_env_with_context

from . import __version__
from .errors import TranzitError

__all__ = [
    "RUN_COMMAND",
    "TEST_COMMAND",
    "InvalidOptionError",
    "ProjectExistsError",
    "TemplateNotFoundError",
    "generate_project",
    "next_steps",
    "parse_overrides",
    "template_dir",
]

#: The two commands of the generated README: serve the project, run its tests.
RUN_COMMAND = "tranzit run"
TEST_COMMAND = "python -m pytest"

_HOOK_PREFIX = "cookiecutter-tranzit: "


class ProjectExistsError(TranzitError):
    """The target directory exists and is not empty (and ``force`` was not given)."""

    exit_code = 1


class InvalidOptionError(TranzitError):
    """An unknown template option, or a value the template's validator rejects."""

    exit_code = 2


class TemplateNotFoundError(TranzitError):
    """Neither the packaged template nor the checkout's ``cookiecutter-tranzit/`` exists."""

    exit_code = 1


def template_dir() -> Path:
    """The template: packaged in the wheel, else the checkout's ``cookiecutter-tranzit/``."""
    package = Path(__file__).resolve().parent
    candidates = [package / "_template", package.parent / "cookiecutter-tranzit"]
    for candidate in candidates:
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise TemplateNotFoundError(
        f"the project template is missing (looked in {looked}); reinstall tranzit"
    )


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["first_app=blog", "http_port=8000"]`` → ``{"first_app": "blog", "http_port": "8000"}``.

    A later item for the same key wins, as on cookiecutter's command line.
    """
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidOptionError(f"expected a template option as KEY=VALUE, found {item!r}")
        overrides[key] = value
    return overrides


def generate_project(
    name: str | None,
    *,
    output_dir: Path,
    extra_context: dict[str, str],
    no_input: bool,
    force: bool,
) -> Path:
    """Generate a project into ``output_dir/<project_slug>`` and return that directory.

    ``name`` sets ``project_name`` (and so the default slug). ``extra_context``
    sets other options, as cookiecutter's ``KEY=VALUE`` arguments do. Raises
    :class:`InvalidOptionError` for an unknown option or a rejected value and
    :class:`ProjectExistsError` when the target exists, is not empty and
    ``force`` is false; in both cases nothing has been written.
    """
    template = template_dir()
    defaults = _template_defaults(template)
    overrides = dict(extra_context)
    if name is not None:
        overrides["project_name"] = name
    _check_known(overrides, defaults)
    overrides["_tranzit_version"] = __version__

    user_config = get_user_config()
    try:
        context = generate_context(
            context_file=str(template / "cookiecutter.json"),
            default_context=user_config["default_context"],
            extra_context=overrides,
        )
    except ValueError as exc:  # a default from ~/.cookiecutterrc that is not a valid choice
        raise InvalidOptionError(str(exc)) from exc
    context["_cookiecutter"] = {
        key: value for key, value in context["cookiecutter"].items() if not key.startswith("_")
    }
    context["cookiecutter"].update(prompt_for_config(context, no_input))
    context["cookiecutter"].update(
        _template=str(template),
        _output_dir=str(output_dir.resolve()),
        _repo_dir=str(template),
        _checkout=None,
    )

    _check_values(template, context)
    target = output_dir / str(context["cookiecutter"]["project_slug"])
    exists = target.exists()
    if exists and not target.is_dir():
        raise ProjectExistsError(f"{target} exists and is not a directory")
    if exists and any(target.iterdir()) and not force:
        raise ProjectExistsError(
            f"{target} already exists and is not empty; choose another name or --output-dir, "
            "or pass --force to write the template's files over it"
        )

    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        project = generate_files(
            repo_dir=str(template),
            context=context,
            output_dir=str(output_dir),
            overwrite_if_exists=exists,
            accept_hooks=True,
        )
    except FailedHookException as exc:  # the pre-check above should make this unreachable
        raise InvalidOptionError(f"the template rejected the options: {exc}") from exc
    return Path(project)


def next_steps(project_dir: Path) -> str:
    """What to type next: the run and test commands of the generated README."""
    port: object = 3000
    config = project_dir / "server.yml"
    if config.is_file():
        loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            port = loaded.get("http_port", port)
    try:
        where = project_dir.resolve().relative_to(Path.cwd())
    except ValueError:
        where = project_dir.resolve()
    width = max(len(RUN_COMMAND), len(TEST_COMMAND)) + 2
    return "\n".join(
        [
            "Next steps:",
            f"  cd {shlex.quote(str(where))}",
            f"  {RUN_COMMAND:<{width}}# then open http://127.0.0.1:{port}/",
            f"  {TEST_COMMAND:<{width}}# after: pip install -r requirements-dev.txt",
        ]
    )


def _template_defaults(template: Path) -> dict[str, Any]:
    with (template / "cookiecutter.json").open(encoding="utf-8") as file:
        defaults: dict[str, Any] = json.load(file)
    return defaults


def _check_known(overrides: dict[str, str], defaults: dict[str, Any]) -> None:
    """Reject unknown (or private) option names and values outside a choice list."""
    public = [key for key in defaults if not key.startswith("_")]
    for key, value in overrides.items():
        if key not in public:
            raise InvalidOptionError(
                f"unknown template option {key!r}; the options are: {', '.join(public)}"
            )
        choices = defaults[key]
        if isinstance(choices, list) and value not in choices:
            raise InvalidOptionError(
                f"{key}: expected one of {', '.join(choices)}, found {value!r}"
            )


def _check_values(template: Path, context: dict[str, Any]) -> None:
    """Run the template's own validator (``pre_gen_project``) before anything is written.

    cookiecutter runs it again while generating; running it here first keeps
    its one-line message for the error instead of letting it go to stderr.
    """
    hook = template / "hooks" / "pre_gen_project.py"
    if not hook.is_file():
        return
    env = create_env_with_context(context)
    source = env.from_string(hook.read_text(encoding="utf-8")).render(**context)
    result = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        check=False,
        cwd=template,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        message = lines[-1] if lines else f"exit status {result.returncode}"
        raise InvalidOptionError(message.removeprefix(_HOOK_PREFIX))
