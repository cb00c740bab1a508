"""Remove what the chosen options leave out. Runs inside the new project.

The values below were checked by pre_gen_project, so they are plain words.
"""

from __future__ import annotations

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
]

if __name__ == "__main__":
    if not INCLUDE_EXAMPLE:
        for path in EXAMPLE_ONLY:
            path.unlink()
    if not INCLUDE_CI:
        shutil.rmtree(".github")
