"""What is published agrees with itself: one version, and the runtime image's requirements.

One version everywhere a user meets it, and one that the 2018 releases cannot
satisfy. The name ``tranzit`` on the package index also holds 0.1 and 0.1.1,
the 2018 releases of the original tranzit: another codebase, whose API this
one keeps. A generated project
installs ``tranzit`` by its pin and starts ``FROM`` the images tagged with
the same version, so these must all agree, and the pin must never admit
the old releases.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from support import pyproject

import tranzit

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "cookiecutter-tranzit"
PROJECT_TEMPLATE = TEMPLATE / "{{cookiecutter.project_slug}}"
VERSION = tranzit.__version__
RELEASES_2018 = ("0.1", "0.1.1")


def rendered(path: Path) -> str:
    """A template file with the tranzit version filled in, as a project gets it."""
    text = path.read_text(encoding="utf-8")
    return re.sub(r"\{\{\s*cookiecutter\._tranzit_version\s*\}\}", VERSION, text)


def requirements(**answers: str) -> str:
    """The template's requirements.txt as a project with these answers gets it."""
    from cookiecutter.environment import StrictEnvironment

    context = {"_tranzit_version": VERSION, "database": "none", **answers}
    text = (PROJECT_TEMPLATE / "requirements.txt").read_text(encoding="utf-8")
    return StrictEnvironment().from_string(text).render(cookiecutter=context)


def test_version_sorts_above_the_2018_releases() -> None:
    version = Version(VERSION)
    assert not version.is_prerelease and not version.is_devrelease, VERSION
    assert all(version > Version(old) for old in RELEASES_2018)
    assert version.major >= 1, "the successor of the 2018 API starts at 1.0"


def test_template_pins_this_version_and_never_the_2018_releases() -> None:
    defaults = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))
    assert defaults["_tranzit_version"] == VERSION

    for database, extras in (("none", set()), ("postgres", {"postgres"})):
        lines = requirements(database=database).splitlines()
        (pin,) = (Requirement(line) for line in lines if line.startswith("tranzit"))
        assert (pin.name, pin.extras) == ("tranzit", extras)
        assert pin.specifier.contains(VERSION)
        for old in RELEASES_2018:
            assert not pin.specifier.contains(old), f"{pin} would accept the 2018 release {old}"


def test_image_tags_follow_the_version() -> None:
    images = yaml.safe_load((REPO / "docker" / "compose.images.yaml").read_text())["services"]
    assert images["runtime"]["image"].endswith(f"ghcr.io/tranzit/runtime:{VERSION}}}")
    assert images["nginx-base"]["image"].endswith(f"ghcr.io/tranzit/nginx:{VERSION}}}")

    dockerfile = rendered(PROJECT_TEMPLATE / "Dockerfile")
    assert f"ARG TRANZIT_RUNTIME_IMAGE=ghcr.io/tranzit/runtime:{VERSION}\n" in dockerfile
    assert f"ARG TRANZIT_NGINX_IMAGE=ghcr.io/tranzit/nginx:{VERSION}\n" in dockerfile
    env_example = rendered(PROJECT_TEMPLATE / ".env.example")
    assert f"TRANZIT_RUNTIME_IMAGE=ghcr.io/tranzit/runtime:{VERSION}\n" in env_example
    assert f"TRANZIT_NGINX_IMAGE=ghcr.io/tranzit/nginx:{VERSION}\n" in env_example
    # Every runtime or nginx image tag anywhere in the template is this version.
    for path in PROJECT_TEMPLATE.rglob("*"):
        if path.is_file() and path.suffix not in {".png", ".ico"}:
            for tag in re.findall(r"ghcr\.io/tranzit/(?:runtime|nginx):([\w.-]+)", rendered(path)):
                assert tag == VERSION, (path, tag)


def test_changelog_newest_entry_is_this_version() -> None:
    headings = re.findall(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert headings, "CHANGELOG.md has no version headings"
    assert headings[0] == VERSION
    assert len(headings) == len(set(headings))


def test_runtime_image_requirements_are_the_package_s_without_the_generator() -> None:
    project = pyproject()["project"]
    declared = [Requirement(line) for line in project["dependencies"]]
    generator = {"cookiecutter"}
    assert generator <= {r.name for r in declared}, "the generator's requirement moved"
    extras = project["optional-dependencies"]
    expected = {str(r) for r in declared if r.name not in generator} | {
        str(Requirement(line)) for name in ("uvloop", "redis", "postgres") for line in extras[name]
    }

    text = (REPO / "docker" / "runtime" / "requirements.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert {str(Requirement(line)) for line in lines} == expected
