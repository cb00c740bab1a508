"""Check the template options before a file is written.

On the first bad value this prints one line to stderr and exits 1; cookiecutter
then removes the directory it created, so nothing is left behind. It only
validates: nothing here creates or changes files.
"""

from __future__ import annotations

import json
import keyword
import re
import sys

# Rendered by cookiecutter: a raw string of JSON, so quotes or backslashes in a
# value cannot break this file (the checks below reject them with a message).
OPTIONS = {
    key: str(value)
    for key, value in json.loads(r"""{{ cookiecutter | jsonify }}""").items()
    if not key.startswith("_")
}

# The runtime image is built for these; keep in step with docker/runtime.
PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13")
# Names the project layout, the framework or pytest already use.
RESERVED_NAMES = frozenset({"tranzit", "test", "tests", "apps", "common"})
# sys.stdlib_module_names is 3.10+; plain cookiecutter may run on an older Python.
STDLIB_NAMES = frozenset(getattr(sys, "stdlib_module_names", ()))
# One path component of an image name, as the OCI distribution spec allows it.
IMAGE_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
REGISTRY_HOST = re.compile(r"(?:localhost|[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}|[a-zA-Z0-9.-]+:[0-9]+)")


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


def first_problem(options: dict[str, str]) -> str | None:
    for key in ("project_slug", "first_app"):
        problem = name_problem(key, options[key])
        if problem:
            return problem
    for key in ("http_port", "ws_port"):
        problem = port_problem(key, options[key])
        if problem:
            return problem
    if int(options["http_port"]) == int(options["ws_port"]):
        return f"ws_port: expected a port different from http_port, found {options['ws_port']}"
    if options["python_version"] not in PYTHON_VERSIONS:
        expected = ", ".join(PYTHON_VERSIONS)
        return f"python_version: expected one of {expected}, found {options['python_version']!r}"
    for key in ("include_example", "include_ci"):
        if options[key] not in ("yes", "no"):
            return f"{key}: expected 'yes' or 'no', found {options[key]!r}"
    return image_problem(options["image_name"])


if __name__ == "__main__":
    problem = first_problem(OPTIONS)
    if problem:
        print(f"cookiecutter-tranzit: {problem}", file=sys.stderr)
        sys.exit(1)
