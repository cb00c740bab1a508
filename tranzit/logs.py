"""Logging for every runner: one format (``text`` or ``json``) for tranzit's, aiohttp's and
gunicorn's loggers.

The dev server and the ``ws`` role call :func:`setup_logging`; gunicorn (the
``http`` role) takes the same configuration as its ``logconfig_dict``
(:func:`logging_config` with ``gunicorn=True``). Only the standard library.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "GUNICORN_TEXT_FORMAT",
    "TEXT_FORMAT",
    "JsonFormatter",
    "logging_config",
    "setup_logging",
]

#: One readable line per record (the ``text`` format).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The same under gunicorn, with the process (the arbiter or one of the workers).
GUNICORN_TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, ``pid``, and ``exc_info`` / ``stack_info`` (text) when the record
    has them.

    ``json.dumps`` escapes newlines, so a traceback stays on its record's line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            # Cached like logging.Formatter does, for other handlers of the record.
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def logging_config(
    level: str, log_format: str = "text", *, gunicorn: bool = False
) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary: everything to stderr at ``level``
    in ``log_format`` (``text`` or ``json``).

    ``aiohttp.access`` (one line per request) is quiet below ``debug``; the runners
    only attach an access log at ``debug`` anyway. ``gunicorn=True`` adds gunicorn's
    ``gunicorn.error`` (to stderr) and ``gunicorn.access`` (to stdout, as gunicorn's
    ``accesslog = "-"`` does), each logged once.
    """
    text = GUNICORN_TEXT_FORMAT if gunicorn else TEXT_FORMAT
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"format": text}
    )
    handlers: dict[str, Any] = {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "tranzit",
            "stream": "ext://sys.stderr",
        }
    }
    loggers: dict[str, Any] = {
        "aiohttp.access": {"level": "INFO" if level == "debug" else "WARNING"},
    }
    if gunicorn:
        handlers["stdout"] = {**handlers["stderr"], "stream": "ext://sys.stdout"}
        loggers["gunicorn.error"] = {
            "level": level.upper(),
            "handlers": ["stderr"],
            "propagate": False,
        }
        loggers["gunicorn.access"] = {"level": "INFO", "handlers": ["stdout"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tranzit": formatter},
        "handlers": handlers,
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": loggers,
    }


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level`` (``config.log_level``) in ``log_format``
    (``config.log_format``); replaces the root logger's handlers."""
    logging.config.dictConfig(logging_config(level, log_format))
