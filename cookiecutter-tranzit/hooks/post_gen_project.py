"""Remove what the chosen options leave out. Runs inside the new project.

The values below were checked by pre_gen_project, so they are plain words.
"""

from __future__ import annotations

import json
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


# Set by cookiecutter for this run (paths of a temporary checkout), not answers.
NOT_ANSWERS = {"_template", "_output_dir", "_repo_dir", "_checkout", "_copy_without_render"}


def write_record() -> None:
    """Record the template version and every answer (committed): what `tranzit upgrade` reads."""
    # JSON escapes every quote in a value, so no """ can close this string early.
    context = json.loads(r"""{{ cookiecutter | jsonify }}""")
    answers = {
        key: value
        for key, value in context.items()
        if not key.startswith("__") and key not in NOT_ANSWERS
    }
    record = {"template_version": answers.get("_tranzit_version"), "answers": answers}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    Path(".tranzit-template.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_record()
    write_env()
    if not INCLUDE_EXAMPLE:
        for path in EXAMPLE_ONLY:
            path.unlink()
    if not INCLUDE_CI:
        shutil.rmtree(".github")
