"""The 2018 import path ``tranzit.web``: aiohttp's ``web`` plus ``TZView``, ``MainServer``
and ``WebSocketServer`` (kept in :mod:`tranzit.compat.web`)."""

from __future__ import annotations

from .compat.web import *  # noqa: F403
from .compat.web import __all__ as __all__
