"""``tranzit upgrade`` on real git repositories: a project generated from the previous
template (tests/fixtures/template_prev, template 0.9.0), edited and committed as a
user would, upgraded to the current template with the real CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from cookiecutter.main import cookiecutter
from support import clean_env

import tranzit

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "cookiecutter-tranzit"
PREVIOUS = Path(__file__).resolve().parent / "fixtures" / "template_prev"
RECORD = ".tranzit-template.json"
ROUTES = "apps/hello/routes.py"


@pytest.fixture
def cookiecutter_config(tmp_path: Path) -> Path:
    config = tmp_path / "cookiecutter-config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cookiecutters_dir": str(tmp_path / "cookiecutters"),
                "replay_dir": str(tmp_path / "replay"),
                "default_context": {},
            }
        )
    )
    return config


def generate(template: Path, out: Path, config: Path) -> Path:
    out.mkdir(parents=True)
    return Path(
        cookiecutter(str(template), no_input=True, output_dir=str(out), config_file=str(config))
    )


def git(project: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def commit(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)


def tranzit_upgrade(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tranzit", "upgrade", *args],
        cwd=project,
        env=clean_env(PYTHONDONTWRITEBYTECODE="1", **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def tree(project: Path) -> set[str]:
    """The files git would see: tracked and untracked, not ignored."""
    listing = git(project, "ls-files", "--cached", "--others", "--exclude-standard")
    return {line for line in listing.splitlines() if (project / line).is_file()}


@pytest.fixture
def project(tmp_path: Path, cookiecutter_config: Path) -> Path:
    """A project from the previous template, committed, with a user's commit on top."""
    made = generate(PREVIOUS, tmp_path / "old", cookiecutter_config)
    git(made, "init", "-q")
    commit(made, "generated from template 0.9.0")
    return made


@pytest.fixture
def fresh(tmp_path: Path, cookiecutter_config: Path) -> Path:
    """The same answers, generated from today's template."""
    return generate(TEMPLATE, tmp_path / "fresh", cookiecutter_config)


def test_generation_records_version_and_every_answer(project: Path) -> None:
    record = json.loads((project / RECORD).read_text())
    assert record["template_version"] == "0.9.0"
    assert record["answers"]["_tranzit_version"] == "0.9.0"
    assert record["answers"]["first_app"] == "hello"
    assert record["answers"]["project_slug"] == project.name
    assert RECORD in git(project, "ls-files")  # committed, not ignored


@pytest.mark.slow
def test_upgrade_takes_template_changes_and_keeps_user_edits(project: Path, fresh: Path) -> None:
    edit(
        project / ROUTES, '    "/": IndexView,\n', '    "/": IndexView,\n    "/about": IndexView,\n'
    )
    edit(project / "compose.yaml", "      - 96mb\n", "      - 256mb\n")
    with (project / "Dockerfile").open("a") as file:
        file.write("ENV APP_GREETING=hi\n")
    commit(project, "user edits")

    check = tranzit_upgrade(project, "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "0.9.0" in check.stdout and tranzit.__version__ in check.stdout

    result = tranzit_upgrade(project, "--from-template", str(PREVIOUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "merged: Dockerfile" in result.stdout
    assert "removed: setup.cfg" in result.stdout
    assert "added: .editorconfig" in result.stdout

    # Files the user did not touch are what a fresh generation gives today.
    edited = {ROUTES, "compose.yaml", "Dockerfile"}
    assert tree(project) == tree_of(fresh)
    for name in tree_of(fresh) - edited - {RECORD}:
        assert (project / name).read_bytes() == (fresh / name).read_bytes(), name
    assert json.loads((project / RECORD).read_text()) == json.loads((fresh / RECORD).read_text())
    # The user's edits survive, merged with the template's changes.
    assert (project / ROUTES).read_text() == git(project, "show", f"HEAD:{ROUTES}")
    compose = (project / "compose.yaml").read_text()
    assert "      - 256mb\n" in compose and "stop_grace_period: 15s" in compose
    dockerfile = (project / "Dockerfile").read_text()
    assert dockerfile.endswith("ENV APP_GREETING=hi\n")
    assert "RUN set -eu; \\\n" in dockerfile
    # The runtime image tag and the requirements pin moved with the template.
    version = tranzit.__version__
    assert f"ARG TRANZIT_RUNTIME_IMAGE=ghcr.io/tranzit/runtime:{version}\n" in dockerfile
    assert f"tranzit=={version}\n" in (project / "requirements.txt").read_text()
    assert "0.9.0" not in (project / "requirements.txt").read_text()

    check = tranzit_upgrade(project, "--check")
    assert check.returncode == 0, check.stdout + check.stderr

    # The upgraded project's own test suite passes.
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=project,
        env=clean_env(PYTHONDONTWRITEBYTECODE="1", PYTEST_ADDOPTS=""),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert suite.returncode == 0, suite.stdout + suite.stderr
    assert " passed" in suite.stdout


def tree_of(generated: Path) -> set[str]:
    """A fresh generation's files, without what the project's .gitignore leaves out (.env)."""
    return {
        p.relative_to(generated).as_posix()
        for p in generated.rglob("*")
        if p.is_file() and p.name != ".env"
    }


def test_conflicting_edit_is_left_with_markers_and_listed(project: Path) -> None:
    # The template moves stop_grace_period from 10s to 15s; the user set 20s.
    edit(project / "compose.yaml", "stop_grace_period: 10s", "stop_grace_period: 20s")
    commit(project, "a longer grace period")

    result = tranzit_upgrade(project, "--from-template", str(PREVIOUS))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CONFLICT: compose.yaml" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "compose.yaml" in errors[0], result.stderr
    compose = (project / "compose.yaml").read_text()
    assert (
        "<<<<<<< project\n  stop_grace_period: 20s\n=======\n"
        f"  stop_grace_period: 15s\n>>>>>>> template {tranzit.__version__}\n"
    ) in compose
    # The rest of the upgrade happened, and the record says so.
    assert f"tranzit=={tranzit.__version__}\n" in (project / "requirements.txt").read_text()
    assert tranzit_upgrade(project, "--check").returncode == 0


def test_file_the_template_dropped_is_kept_when_the_user_changed_it(project: Path) -> None:
    with (project / "setup.cfg").open("a") as file:
        file.write("[mypy]\nstrict = True\n")
    commit(project, "mypy settings")
    result = tranzit_upgrade(project, "--from-template", str(PREVIOUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kept (changed or deleted here): setup.cfg" in result.stdout
    assert "strict = True" in (project / "setup.cfg").read_text()


def test_dirty_work_tree_or_no_git_is_refused(project: Path, tmp_path: Path) -> None:
    before = (project / "Dockerfile").read_text()
    edit(project / ROUTES, '"/": IndexView', '"/home": IndexView')
    result = tranzit_upgrade(project, "--from-template", str(PREVIOUS))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "uncommitted changes" in result.stderr
    assert ROUTES in result.stderr
    assert (project / "Dockerfile").read_text() == before
    assert json.loads((project / RECORD).read_text())["template_version"] == "0.9.0"

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / RECORD).write_text((project / RECORD).read_text())
    result = tranzit_upgrade(plain, "--from-template", str(PREVIOUS))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "not a git repository" in result.stderr


def test_project_without_record_is_refused(tmp_path: Path) -> None:
    result = tranzit_upgrade(tmp_path, "--check")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and RECORD in result.stderr


def test_new_option_takes_key_value_others_are_refused(project: Path) -> None:
    # A record from before the template asked for an author.
    record = json.loads((project / RECORD).read_text())
    del record["answers"]["author"]
    (project / RECORD).write_text(json.dumps(record))
    commit(project, "older record")

    for bad, why in [("no_such=1", "unknown template option"), ("first_app=blog", "answered")]:
        result = tranzit_upgrade(project, "--from-template", str(PREVIOUS), bad)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.count("\n") == 1 and why in result.stderr

    result = tranzit_upgrade(project, "--from-template", str(PREVIOUS), "author=Ada Lovelace")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((project / RECORD).read_text())["answers"]["author"] == "Ada Lovelace"


def build_wheel(directory: Path, version: str, template: Path) -> Path:
    """A ``tranzit`` wheel holding ``template`` as ``tranzit/_template``, as the real one does."""
    directory.mkdir()
    wheel = directory / f"tranzit-{version}-py3-none-any.whl"
    info = f"tranzit-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in sorted(template.rglob("*")):
            if path.is_file():
                archive.write(path, f"tranzit/_template/{path.relative_to(template).as_posix()}")
        archive.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: tranzit\nVersion: {version}\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_old_template_comes_from_the_cache_or_the_tranzit_wheel(
    project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "index")}
    (tmp_path / "index").mkdir()

    # Neither in the cache nor on the index: one line saying what to do.
    result = tranzit_upgrade(project, "--cache-dir", str(cache), **offline)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    assert "no template for tranzit 0.9.0" in result.stderr and "--from-template" in result.stderr
    assert git(project, "status", "--porcelain") == ""

    (tmp_path / "index").rmdir()
    build_wheel(tmp_path / "index", "0.9.0", PREVIOUS)
    result = tranzit_upgrade(project, "--cache-dir", str(cache), **offline)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (cache / "0.9.0" / "cookiecutter.json").is_file()
    assert f"tranzit=={tranzit.__version__}\n" in (project / "requirements.txt").read_text()


def test_new_option_is_asked_at_a_terminal_and_checked(project: Path, tmp_path: Path) -> None:
    """At a terminal, an option the record lacks is asked as `tranzit project` asks it:
    checked by the template's validator, asked again with the reason."""
    import pexpect

    record = json.loads((project / RECORD).read_text())
    del record["answers"]["http_port"]
    (project / RECORD).write_text(json.dumps(record))
    commit(project, "a record from before the template asked for the HTTP port")
    home = tmp_path / "home"
    home.mkdir()
    child = pexpect.spawn(
        sys.executable,
        ["-m", "tranzit", "upgrade", "--from-template", str(PREVIOUS)],
        cwd=str(project),
        env=clean_env(HOME=str(home), NO_COLOR="1", TERM="dumb", COLUMNS="200"),
        encoding="utf-8",
        timeout=30,
        dimensions=(60, 200),
    )
    try:
        child.expect("The new template asks for http_port")
        child.expect(r"\): $")
        child.sendline("abc")
        child.expect("http_port: expected an integer from 1 to 65535")  # the reason
        child.expect(r"\): $")
        child.sendline("8123")
        # The options this template added since 0.9.0 are asked too; their defaults taken.
        for option in ("Serve HTTPS from nginx", "Database service for the project"):
            child.expect(option)
            child.expect(r"\): $")
            child.sendline("")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    answers = json.loads((project / RECORD).read_text())["answers"]
    assert (answers["http_port"], answers["https"], answers["database"]) == ("8123", "yes", "none")
    assert "http_port: 8123" in (project / "server.yml").read_text()
