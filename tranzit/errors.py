"""One hierarchy for every error tranzit raises on purpose.

The library raises; only the CLI turns these into a message and an exit code
(``exit_code`` on each class).
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "AppLoadError",
    "ConfigError",
    "ServeError",
    "TranzitError",
    "show",
    "show_key",
]


class TranzitError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code: int = 1


class ConfigError(TranzitError):
    """``server.yml`` or a ``TRANZIT_*`` variable is missing, malformed or out of range."""

    exit_code = 2

    def __init__(self, source: str, key: str | None, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class AppLoadError(TranzitError):
    """A project's app could not be imported or its routes/rules are inconsistent."""

    exit_code = 2


class ServeError(TranzitError):
    """A server could not start (for example: the port is already in use)."""

    exit_code = 1


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel = 2


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message: one line, at most ``limit`` characters.

    Bounded work on any value (reprlib stops early), so a hostile value cannot make
    building the message itself expensive.
    """
    return _one_line(_repr.repr(value), limit)


def show_key(key: Any, limit: int = 80) -> str:
    """A key or a text as it appears in a message: strings as written (on one line, at
    most ``limit`` characters), anything else as ``show``."""
    return _one_line(key, limit) if isinstance(key, str) else show(key, limit)


def _one_line(text: str, limit: int = 80) -> str:
    text = " ".join(text[: limit * 4].split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
