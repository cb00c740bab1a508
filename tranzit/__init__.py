"""tranzit: an aiohttp web framework with a websocket rule protocol, shipped Docker-first.

``import tranzit`` stays light (the version only); ``tranzit.load`` imports the
framework when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "1.0.0"

__all__ = ["RuleError", "__version__", "load"]

if TYPE_CHECKING:
    from .loader import load as load
    from .ws.rules import RuleError as RuleError


def __getattr__(name: str) -> Any:
    if name == "load":
        from .loader import load

        return load
    if name == "RuleError":
        from .ws.rules import RuleError

        return RuleError
    if name == "auth":
        import importlib

        return importlib.import_module(".auth", __name__)
    raise AttributeError(f"module 'tranzit' has no attribute {name!r}")
