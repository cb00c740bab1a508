"""One hierarchy for every error tranzit raises on purpose.

The library raises; only the CLI turns these into a message and an exit code
(``exit_code`` on each class).
"""

from __future__ import annotations

__all__ = [
    "AppLoadError",
    "ConfigError",
    "ServeError",
    "TranzitError",
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
