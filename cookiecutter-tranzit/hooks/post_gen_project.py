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
DATABASE = "{{ cookiecutter.database }}"

# The websocket rules of the example, its page script and their tests.
EXAMPLE_ONLY = [
    Path("apps", FIRST_APP, "rules.py"),
    Path("apps", FIRST_APP, "static", "app.js"),
    Path("tests", "test_rules.py"),
    Path("tests", "test_login.py"),
]
# The example chat's table: without the example, migrations/versions/ starts empty.
CHAT_MIGRATION = Path("migrations", "versions", "0001_chat_history.py")


def write_env() -> None:
    """Write a ready .env (git- and docker-ignored) with its own secrets.

    The database password goes into TRANZIT_DATABASE_URL as it is, so it is
    URL-safe; .env.example has its line only with ``database=postgres``.
    """
    env = Path(".env")
    if not env.exists():
        text = Path(".env.example").read_text(encoding="utf-8")
        secret = secrets.token_urlsafe(48)
        text = text.replace("TRANZIT_SECRET_KEY=\n", f"TRANZIT_SECRET_KEY={secret}\n")
        password = secrets.token_urlsafe(32)
        env.write_text(text.replace("POSTGRES_PASSWORD=\n", f"POSTGRES_PASSWORD={password}\n"))


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
    if DATABASE == "none":
        shutil.rmtree("migrations")
    elif not INCLUDE_EXAMPLE:
        CHAT_MIGRATION.unlink()
