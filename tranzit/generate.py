"""``tranzit project``: a new project from the cookiecutter-tranzit template.

The template ships inside the wheel as ``tranzit/_template`` (an editable
install uses ``cookiecutter-tranzit/`` of the checkout), so generating needs
neither network nor git. The steps are cookiecutter's own (context, prompts,
files, hooks); this module adds what the CLI needs around them: unknown
options, bad values and an existing target are reported as
:class:`~tranzit.errors.TranzitError` before anything is written.

Values are checked by the template's own validator, its ``pre_gen_project``
hook, imported here: ``KEY=VALUE`` options before the first question, each
answer right after it is typed (asked again with the reason), and all of
them before a file is written.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, cast

import yaml
from cookiecutter.config import get_user_config
from cookiecutter.exceptions import FailedHookException
from cookiecutter.generate import generate_context, generate_files
from cookiecutter.prompt import (
    prompt_for_config,
    read_user_choice,
    read_user_variable,
    render_variable,
)
from cookiecutter.utils import create_env_with_context

from . import __version__
from .errors import TranzitError

__all__ = [
    "RUN_COMMAND",
    "TEST_COMMAND",
    "InvalidOptionError",
    "ProjectExistsError",
    "TemplateChecks",
    "TemplateNotFoundError",
    "ask_option",
    "generate_project",
    "next_steps",
    "parse_overrides",
    "template_checks",
    "template_dir",
]

#: The two commands of the generated README: serve the project, run its tests.
RUN_COMMAND = "tranzit run"
TEST_COMMAND = "python -m pytest"


class ProjectExistsError(TranzitError):
    """The target directory exists and is not empty (and ``force`` was not given)."""

    exit_code = 1


class InvalidOptionError(TranzitError):
    """An unknown template option, or a value the template's validator rejects."""

    exit_code = 2


class TemplateNotFoundError(TranzitError):
    """Neither the packaged template nor the checkout's ``cookiecutter-tranzit/`` exists."""

    exit_code = 1


class TemplateChecks(Protocol):
    """The template's validator: the functions of its ``hooks/pre_gen_project.py``.

    Each returns the one-line reason a value is refused, or None.
    """

    def value_problem(self, key: str, value: str) -> str | None: ...

    def option_problem(self, key: str, value: str, before: Mapping[str, str]) -> str | None: ...

    def applies(self, key: str, before: Mapping[str, str]) -> bool: ...

    def first_problem(self, options: Mapping[str, str]) -> str | None: ...


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
    checks = template_checks(template)
    defaults = _template_defaults(template)
    overrides = dict(extra_context)
    if name is not None:
        overrides["project_name"] = name
    _check_known(overrides, defaults)
    # Against each other only: a default they clash with may still be answered differently.
    _raise_problem(checks.first_problem({k: overrides[k] for k in defaults if k in overrides}))
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
    if no_input:
        answers = prompt_for_config(context, True)
    else:
        answers = _ask(context, checks, lambda slug: _target_problem(output_dir / slug, force))
    context["cookiecutter"].update(answers)
    context["cookiecutter"].update(
        _template=str(template),
        _output_dir=str(output_dir.resolve()),
        _repo_dir=str(template),
        _checkout=None,
    )

    options = context["cookiecutter"].items()
    _raise_problem(checks.first_problem({k: str(v) for k, v in options if not k.startswith("_")}))
    target = output_dir / str(context["cookiecutter"]["project_slug"])
    exists = target.exists()
    problem = _target_problem(target, force)
    if problem is not None:
        raise ProjectExistsError(problem)

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


def template_checks(template: Path) -> TemplateChecks:
    """The validator of ``template``: its ``pre_gen_project`` hook, loaded as a module.

    Compiled from its source rather than imported, so that no ``__pycache__``
    is written into the template (a wheel's may be read-only) and nothing is
    left in ``sys.modules``; ``main()``, which needs the rendered file, is not run.
    """
    hook = template / "hooks" / "pre_gen_project.py"
    try:
        source = hook.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateNotFoundError(
            f"the project template's validator {hook} is missing; reinstall tranzit"
        ) from exc
    module = ModuleType("tranzit_template_checks")
    module.__file__ = str(hook)
    exec(compile(source, str(hook), "exec"), module.__dict__)
    return cast(TemplateChecks, module)


def _raise_problem(problem: str | None) -> None:
    if problem is not None:
        raise InvalidOptionError(problem)


def _target_problem(target: Path, force: bool) -> str | None:
    if target.exists() and not target.is_dir():
        return f"{target} exists and is not a directory"
    if target.is_dir() and any(target.iterdir()) and not force:
        return (
            f"{target} already exists and is not empty; choose another name or --output-dir, "
            "or pass --force to write the template's files over it"
        )
    return None


def _ask(
    context: dict[str, Any], checks: TemplateChecks, slug_problem: Callable[[str], str | None]
) -> dict[str, Any]:
    """Ask each question with cookiecutter's prompts, checking every answer as it comes.

    Defaults are rendered from the answers so far (``project_slug`` from
    ``project_name``), as cookiecutter does. A question that no longer applies
    (``checks.applies``) is skipped and takes its default, unless that default
    is itself rejected: then the reason is shown and the question asked.
    ``slug_problem`` checks the directory name against the output directory,
    so that a taken one is asked again rather than refused after the last question.
    """
    env = create_env_with_context(context)
    questions = context["cookiecutter"]
    prompts = questions.pop("__prompts__", {})
    size = sum(not key.startswith("_") for key in questions)
    answers: dict[str, Any] = {}
    number = 0
    for key, raw in questions.items():
        if key.startswith("_"):
            answers[key] = render_variable(env, raw, answers) if key.startswith("__") else raw
            continue
        number += 1
        before = {k: str(v) for k, v in answers.items() if not k.startswith("_")}
        default = render_variable(env, raw, answers)
        first = default[0] if isinstance(default, list) else default
        if not checks.applies(key, before):
            problem = checks.option_problem(key, first, before)
            if problem is None:
                answers[key] = first
                continue
            _show(problem)
        question = _Question(key, default, prompts, f"  [dim][{number}/{size}][/] ")
        answers[key] = question.ask_until_valid(checks, before, slug_problem)
    return answers


@dataclass(frozen=True)
class _Question:
    """One option's question, asked with cookiecutter's own prompt functions."""

    key: str
    default: Any  # the rendered default: text, or the list of choices
    prompts: dict[str, Any]  # the template's __prompts__
    prefix: str  # cookiecutter's "[n/size]"

    def ask_until_valid(
        self,
        checks: TemplateChecks,
        before: Mapping[str, str],
        slug_problem: Callable[[str], str | None],
    ) -> Any:
        """The first answer the validator accepts; each rejected one is followed by its reason.

        The default stays the template's: pressing Enter on a rejected value
        would only repeat it.
        """
        while True:
            answer = self.ask()
            problem = checks.option_problem(self.key, str(answer), before)
            if problem is None and self.key == "project_slug":
                problem = slug_problem(str(answer))
            if problem is None:
                return answer
            _show(problem)

    def ask(self) -> Any:
        try:
            if isinstance(self.default, list):
                return read_user_choice(self.key, self.default, self.prompts, self.prefix)
            return read_user_variable(self.key, self.default, self.prompts, self.prefix)
        except EOFError:
            raise InvalidOptionError(f"{self.key}: no answer (the input ended)") from None


def ask_option(template: Path, key: str, answers: Mapping[str, Any], *, prefix: str = "  ") -> Any:
    """Ask one option of ``template`` as ``tranzit project`` does (its default rendered from
    ``answers``, each answer checked by the template's validator, asked again with the
    reason); ``tranzit upgrade`` asks the options a project's record lacks this way."""
    defaults = _template_defaults(template)
    env = create_env_with_context({"cookiecutter": defaults})
    default = render_variable(env, defaults[key], dict(answers))
    before = {k: str(v) for k, v in answers.items() if not k.startswith("_")}
    question = _Question(key, default, defaults.get("__prompts__", {}), prefix)
    return question.ask_until_valid(template_checks(template), before, lambda _: None)


def _show(problem: str) -> None:
    print(f"  {problem}", file=sys.stderr, flush=True)
