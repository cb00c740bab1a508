"""Check the template options before a file is written.

On the first bad value this prints one line to stderr and exits 1; cookiecutter
then removes the directory it created, so nothing is left behind. It only
validates: nothing here creates or changes files.

``tranzit project`` imports this file as it is, unrendered, to check each
answer right after it is typed (``tranzit.generate``), so the checks are plain
functions of strings and the one piece of Jinja, the options in ``main()``,
sits inside a string literal.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Mapping

# The runtime image is built for these; keep in step with docker/runtime.
PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13")
# Names the project layout, the framework or pytest already use.
RESERVED_NAMES = frozenset({"tranzit", "test", "tests", "apps", "common"})
# sys.stdlib_module_names is 3.10+; plain cookiecutter may run on an older Python.
STDLIB_NAMES = frozenset(getattr(sys, "stdlib_module_names", ()))
# One path component of an image name, as the OCI distribution spec allows it.
IMAGE_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
REGISTRY_HOST = re.compile(r"(?:localhost|[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}|[a-zA-Z0-9.-]+:[0-9]+)")
# The options answered "yes" or "no"; the database services compose.yaml knows.
YES_NO = ("include_example", "include_ci", "https")
DATABASES = ("none", "postgres")


def name_problem(key: str, value: str) -> str | None:
    if not value.isidentifier() or not value.isascii():
        return (
            f"{key}: expected a Python identifier (ASCII letters, digits and '_', "
            f"not starting with a digit), found {value!r}"
        )
    if keyword.iskeyword(value):
        return f"{key}: {value!r} is a Python keyword; choose another name"
    if value in STDLIB_NAMES:
        return f"{key}: {value!r} would shadow the standard library module {value!r}"
    if value in RESERVED_NAMES:
        reserved = ", ".join(sorted(RESERVED_NAMES))
        return f"{key}: {value!r} is reserved (reserved names: {reserved})"
    return None


def port_problem(key: str, value: str) -> str | None:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        return f"{key}: expected an integer from 1 to 65535, found {value!r}"
    return None


def image_problem(value: str) -> str | None:
    parts = value.split("/")
    if len(parts) > 1 and REGISTRY_HOST.fullmatch(parts[0]):
        parts = parts[1:]
    if not all(IMAGE_COMPONENT.fullmatch(part) for part in parts):
        return (
            "image_name: expected a lowercase image name without a tag, like "
            f"'ghcr.io/owner/name', found {value!r}"
        )
    return None


def value_problem(key: str, value: str) -> str | None:
    """What is wrong with one option's value on its own, or None (also for free text)."""
    if key in ("project_slug", "first_app"):
        return name_problem(key, value)
    if key in ("http_port", "ws_port"):
        return port_problem(key, value)
    if key == "python_version" and value not in PYTHON_VERSIONS:
        expected = ", ".join(PYTHON_VERSIONS)
        return f"python_version: expected one of {expected}, found {value!r}"
    if key in YES_NO and value not in ("yes", "no"):
        return f"{key}: expected 'yes' or 'no', found {value!r}"
    if key == "database" and value not in DATABASES:
        return f"database: expected one of {', '.join(DATABASES)}, found {value!r}"
    if key == "image_name":
        return image_problem(value)
    return None


def option_problem(key: str, value: str, before: Mapping[str, str]) -> str | None:
    """``value_problem``, and what is wrong with the value given the options ``before`` it."""
    problem = value_problem(key, value)
    if problem is None and key == "ws_port" and int(value) == _port(before.get("http_port")):
        return f"ws_port: expected a port different from http_port, found {value}"
    return problem


def _port(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def applies(key: str, before: Mapping[str, str]) -> bool:
    """Whether the question for ``key`` still matters after the answers ``before`` it."""
    if key == "image_name":  # CI pushes it; compose.yaml only names its local build with it
        return before.get("include_ci", "yes") == "yes"
    return True


def first_problem(options: Mapping[str, str]) -> str | None:
    """The first bad option, in the order of ``cookiecutter.json``."""
    before: dict[str, str] = {}
    for key, value in options.items():
        problem = option_problem(key, value, before)
        if problem:
            return problem
        before[key] = value
    return None


def main() -> int:
    # Rendered by cookiecutter: a raw string of JSON, so quotes or backslashes in a
    # value cannot break this file (the checks above reject them with a message).
    context = json.loads(r"""{{ cookiecutter | jsonify }}""")
    options = {key: str(value) for key, value in context.items() if not key.startswith("_")}
    problem = first_problem(options)
    if problem:
        print(f"cookiecutter-tranzit: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
