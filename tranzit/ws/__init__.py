"""Websockets in layers: protocol (pure) → rules → connection → endpoint → server."""

from __future__ import annotations

from .connection import Connection as Connection
from .connection import ConnectionClosed as ConnectionClosed
from .connection import ConnectionRegistry as ConnectionRegistry
from .rules import RuleTable as RuleTable
from .server import WebSocketServer as WebSocketServer

__all__ = ["Connection", "ConnectionClosed", "ConnectionRegistry", "RuleTable", "WebSocketServer"]
