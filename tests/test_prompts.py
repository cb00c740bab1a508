"""``tranzit project`` on a terminal: each answer is checked as it is typed.

The generator runs in a pseudo-terminal (pexpect), as a user at a shell runs
it; every wait is bounded by ``WAIT``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
import yaml
from support import clean_env

from tranzit.generate import template_checks, template_dir

#: Seconds any one expected output may take (the generator answers in well under one).
WAIT = 15
#: The end of a question: cookiecutter's text prompts end in "(default): ", its choices in "(1): ".
PROMPT = r"\): $"


_children: list[pexpect.spawn] = []


@pytest.fixture(autouse=True)
def _end_children() -> Iterator[None]:
    """A test that fails mid-dialogue leaves no generator waiting for an answer."""
    yield
    while _children:
        _children.pop().close(force=True)


def spawn(tmp_path: Path, *args: str) -> pexpect.spawn:
    home = tmp_path / "home"  # no ~/.cookiecutterrc of the user running the tests
    home.mkdir(exist_ok=True)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "tranzit", "project", "--output-dir", str(tmp_path / "out"), *args],
        cwd=str(tmp_path),
        env=clean_env(HOME=str(home), NO_COLOR="1", TERM="dumb", COLUMNS="200"),
        encoding="utf-8",
        timeout=WAIT,
        dimensions=(60, 200),
    )
    _children.append(child)
    return child


def question(child: pexpect.spawn, text: str) -> str:
    """Wait for the question containing ``text``; return everything printed since the last one."""
    child.expect(PROMPT)
    shown = f"{child.before}{child.after}"
    assert text in shown, shown
    return shown


def answer(child: pexpect.spawn, text: str, reply: str) -> str:
    shown = question(child, text)
    child.sendline(reply)
    return shown


def finish(child: pexpect.spawn) -> tuple[str, int]:
    child.expect(pexpect.EOF)
    rest = child.before or ""
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return rest, child.exitstatus


def test_wrong_answers_are_asked_again_with_their_reason(tmp_path: Path) -> None:
    child = spawn(tmp_path)
    answer(child, "Project name", "Blog")
    shown = answer(child, "Directory name", "")
    assert "(blog)" in shown  # the slug's default is rendered from the name just given
    answer(child, "One-line description", "")
    answer(child, "Author", "")
    answer(child, "Name of the first app", "json")
    shown = answer(child, "Name of the first app", "posts")
    assert "first_app: 'json' would shadow the standard library module 'json'" in shown
    answer(child, "HTTP port", "abc")
    shown = answer(child, "HTTP port", "8000")
    assert "http_port: expected an integer from 1 to 65535, found 'abc'" in shown
    answer(child, "Websocket server port", "8000")
    shown = answer(child, "Websocket server port", "")
    assert "ws_port: expected a port different from http_port, found 8000" in shown
    assert "(19719)" in shown  # a rejected answer does not replace the default
    answer(child, "Python version", "2")
    answer(child, "Include the example page", "")
    answer(child, "Include a GitHub Actions workflow", "1")
    answer(child, "Serve HTTPS from nginx", "")
    shown = answer(child, "Database service", "2")
    assert "1 - none" in shown and "2 - postgres" in shown
    shown = answer(child, "Container image name", "ghcr.io/me/BLOG")
    assert "(ghcr.io/your-name/blog)" in shown
    shown = answer(child, "Container image name", "ghcr.io/me/blog")
    assert "image_name: expected a lowercase image name without a tag" in shown
    rest, status = finish(child)
    assert status == 0, rest
    assert f"Created {tmp_path / 'out' / 'blog'}" in rest

    project = tmp_path / "out" / "blog"
    config = yaml.safe_load((project / "server.yml").read_text())
    assert config["http_port"] == 8000
    assert config["ws_port"] == 19719
    assert config["apps"] == ["posts"]
    assert (project / "apps" / "posts" / "rules.py").is_file()
    assert not (project / "apps" / "json").exists()
    assert "IMAGE_NAME=ghcr.io/me/blog\n" in (project / ".github" / "ci.env").read_text()
    assert "PYTHON_VERSION=3.11\n" in (project / ".github" / "ci.env").read_text()
    assert (project / "migrations" / "versions" / "0001_chat_history.py").is_file()
    assert "tranzit[postgres]==" in (project / "requirements.txt").read_text()


def test_without_ci_the_image_name_is_not_asked(tmp_path: Path) -> None:
    child = spawn(tmp_path, "Shop", "first_app=catalog", "include_example=no")
    for text in ("Project name", "Directory name", "One-line description", "Author"):
        answer(child, text, "")
    shown = answer(child, "Name of the first app", "")
    assert "(catalog)" in shown  # KEY=VALUE values are the defaults offered
    for text in ("HTTP port", "Websocket server port", "Python version", "Include the example"):
        answer(child, text, "")
    answer(child, "Include a GitHub Actions workflow", "2")
    answer(child, "Serve HTTPS from nginx", "")
    answer(child, "Database service", "")
    # The next output is the result, not another question.
    index = child.expect([PROMPT, pexpect.EOF])
    assert index == 1, f"asked after include_ci=no: {child.before}"
    rest = child.before or ""
    child.close()
    assert child.exitstatus == 0, rest
    assert "Container image name" not in rest

    project = tmp_path / "out" / "shop"
    assert (project / "apps" / "catalog" / "routes.py").is_file()
    assert not (project / "apps" / "catalog" / "rules.py").exists()
    assert not (project / ".github").exists()
    compose = (project / "compose.yaml").read_text()
    assert "${IMAGE_NAME:-ghcr.io/your-name/shop}:" in compose


def test_skipped_question_with_a_rejected_default_is_asked(tmp_path: Path) -> None:
    """Without CI the image name still names compose.yaml's build: a bad default is not taken."""
    child = spawn(tmp_path, "project_slug=MyShop", "include_ci=no", "--force")
    for text in ("Project name", "Directory name", "One-line description", "Author"):
        answer(child, text, "")
    for text in ("Name of the first app", "HTTP port", "Websocket server port"):
        answer(child, text, "")
    for text in ("Python version", "Include the example", "Include a GitHub Actions workflow"):
        answer(child, text, "")
    for text in ("Serve HTTPS from nginx", "Database service"):
        answer(child, text, "")
    shown = answer(child, "Container image name", "ghcr.io/me/my-shop")
    assert "image_name: expected a lowercase image name without a tag" in shown
    assert "'ghcr.io/your-name/MyShop'" in shown
    rest, status = finish(child)
    assert status == 0, rest
    compose = (tmp_path / "out" / "MyShop" / "compose.yaml").read_text()
    assert "${IMAGE_NAME:-ghcr.io/me/my-shop}:" in compose


def test_a_taken_directory_name_is_asked_again(tmp_path: Path) -> None:
    taken = tmp_path / "out" / "blog"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("mine\n")
    child = spawn(tmp_path, "Blog")
    answer(child, "Project name", "")
    answer(child, "Directory name", "")
    shown = answer(child, "Directory name", "blog2")
    assert f"{taken} already exists and is not empty; choose another name" in shown
    for _ in range(11):
        answer(child, "", "")
    rest, status = finish(child)
    assert status == 0, rest
    assert (tmp_path / "out" / "blog2" / "server.yml").is_file()
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http_port=abc"], "tranzit: http_port: expected an integer from 1 to 65535, found 'abc'"),
        (
            ["Blog", "first_app=json"],
            "tranzit: first_app: 'json' would shadow the standard library",
        ),
        (["http_port=8000", "ws_port=8000"], "tranzit: ws_port: expected a port different from"),
        (["image_name=Me/App"], "tranzit: image_name: expected a lowercase image name"),
        (["include_ci=maybe"], "tranzit: include_ci: expected one of yes, no, found 'maybe'"),
        (["https=on"], "tranzit: https: expected one of yes, no, found 'on'"),
        (["database=mysql"], "tranzit: database: expected one of none, postgres, found 'mysql'"),
    ],
)
def test_bad_command_line_value_is_refused_before_any_prompt(
    tmp_path: Path, args: list[str], message: str
) -> None:
    rest, status = finish(spawn(tmp_path, *args))
    assert status == 2, rest
    lines = [line for line in rest.splitlines() if line.strip()]
    assert len(lines) == 1, rest
    assert lines[0].startswith(message), rest
    assert "Project name" not in rest
    assert not (tmp_path / "out").exists()


def test_input_ending_at_a_question_is_one_line(tmp_path: Path) -> None:
    child = spawn(tmp_path)
    answer(child, "Project name", "Blog")
    question(child, "Directory name")
    child.sendeof()
    rest, status = finish(child)
    assert status == 2, rest
    assert "tranzit: project_slug: no answer (the input ended)" in rest
    assert "Traceback" not in rest
    assert not (tmp_path / "out").exists()


# -- one validator: the hook cookiecutter runs is the module tranzit checks answers with --


def test_the_hook_is_the_validator_tranzit_uses() -> None:
    checks = template_checks(template_dir())
    assert checks.value_problem("first_app", "json") == (
        "first_app: 'json' would shadow the standard library module 'json'"
    )
    assert checks.value_problem("project_name", "anything at all") is None
    assert checks.option_problem("ws_port", "3000", {"http_port": "3000"}) is not None
    assert checks.option_problem("ws_port", "3000", {"http_port": "8000"}) is None
    assert not checks.applies("image_name", {"include_ci": "no"})
    assert checks.applies("image_name", {"include_ci": "yes"})
    assert checks.value_problem("https", "no") is None
    assert checks.value_problem("https", "1") == "https: expected 'yes' or 'no', found '1'"
    assert checks.value_problem("database", "postgres") is None
    assert checks.value_problem("database", "sqlite") == (
        "database: expected one of none, postgres, found 'sqlite'"
    )
    hook = template_dir() / "hooks"
    assert not (hook / "__pycache__").exists()  # loading it wrote nothing into the template


def test_every_option_is_text_or_a_choice_list() -> None:
    """The questions are asked with read_user_variable or read_user_choice, nothing else."""
    options = yaml.safe_load((template_dir() / "cookiecutter.json").read_text())
    kinds = {key: type(value) for key, value in options.items() if not key.startswith("_")}
    assert set(kinds.values()) <= {str, int, list}, kinds


def test_a_hook_failure_under_cookiecutter_writes_only_its_reason_to_stderr(
    tmp_path: Path,
) -> None:
    """cookiecutter's own report of the failure goes to stdout (docs/generator.md)."""
    out = tmp_path / "out"
    out.mkdir()
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
    result = subprocess.run(
        [cookiecutter, "--no-input", "--output-dir", out, template_dir(), "first_app=json"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
        env=clean_env(HOME=str(tmp_path), NO_COLOR="1"),
    )
    assert result.returncode == 1
    assert result.stderr == (
        "cookiecutter-tranzit: first_app: 'json' would shadow the standard library module 'json'\n"
    )
    assert "Hook script failed (exit status: 1)" in result.stdout
    assert list(out.iterdir()) == []
