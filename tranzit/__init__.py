"""tranzit: an aiohttp web framework with a websocket rule protocol, shipped Docker-first."""

from __future__ import annotations

__version__ = "1.0.0"

__all__ = ["__version__"]
