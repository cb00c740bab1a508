"""Websockets in layers: protocol → rules → connection → endpoint → server; hub for groups."""

from __future__ import annotations

from .connection import Connection as Connection
from .connection import ConnectionClosed as ConnectionClosed
from .connection import ConnectionRegistry as ConnectionRegistry
from .hub import HUB as HUB
from .hub import BroadcastUnavailable as BroadcastUnavailable
from .hub import Hub as Hub
from .rules import RuleTable as RuleTable
from .server import WebSocketServer as WebSocketServer

__all__ = [
    "HUB",
    "BroadcastUnavailable",
    "Connection",
    "ConnectionClosed",
    "ConnectionRegistry",
    "Hub",
    "RuleTable",
    "WebSocketServer",
]
