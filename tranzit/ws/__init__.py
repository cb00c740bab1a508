"""The websocket core, in layers (``docs/architecture.md``):

protocol → rules → outbound → connection → backplane / redis_backend → hub → endpoint.
"""

from __future__ import annotations

from .backplane import BroadcastIncomplete as BroadcastIncomplete
from .backplane import BroadcastUnavailable as BroadcastUnavailable
from .backplane import Position as Position
from .connection import Connection as Connection
from .connection import ConnectionClosed as ConnectionClosed
from .connection import ConnectionRegistry as ConnectionRegistry
from .hub import HUB as HUB
from .hub import Hub as Hub
from .hub import Recovery as Recovery
from .rules import RuleError as RuleError
from .rules import RuleTable as RuleTable

__all__ = [
    "HUB",
    "BroadcastIncomplete",
    "BroadcastUnavailable",
    "Connection",
    "ConnectionClosed",
    "ConnectionRegistry",
    "Hub",
    "Position",
    "Recovery",
    "RuleError",
    "RuleTable",
]
