"""Remove what the chosen options leave out. Runs inside the new project.

The values below were checked by pre_gen_project, so they are plain words.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

FIRST_APP = "{{ cookiecutter.first_app }}"
INCLUDE_EXAMPLE = "{{ cookiecutter.include_example }}" == "yes"
INCLUDE_CI = "{{ cookiecutter.include_ci }}" == "yes"

# The websocket rules of the example, its page script and their tests.
EXAMPLE_ONLY = [
    Path("apps", FIRST_APP, "rules.py"),
    Path("apps", FIRST_APP, "static", "app.js"),
    Path("tests", "test_rules.py"),
    Path("tests", "test_login.py"),
]


def write_env() -> None:
    """Write a ready .env (git- and docker-ignored) with its own secret."""
    env = Path(".env")
    if not env.exists():
        text = Path(".env.example").read_text(encoding="utf-8")
        secret = secrets.token_urlsafe(48)
        env.write_text(text.replace("TRANZIT_SECRET_KEY=\n", f"TRANZIT_SECRET_KEY={secret}\n"))


if __name__ == "__main__":
    write_env()
    if not INCLUDE_EXAMPLE:
        for path in EXAMPLE_ONLY:
            path.unlink()
    if not INCLUDE_CI:
        shutil.rmtree(".github")
