"""The websocket bounds' defaults, defined once.

:class:`~tranzit.config.Config`, the endpoint, the hub and the 2018
``WebSocketServer`` all take their defaults from here (``docs/protocol.md``
says what a client sees when one is reached).
"""

from __future__ import annotations

from typing import Final

__all__ = ["HEARTBEAT", "MAX_MESSAGE_SIZE", "MAX_TASKS", "SEND_QUEUE"]

#: Largest message a client may send, in bytes (larger: closed with 1009).
MAX_MESSAGE_SIZE: Final = 1024 * 1024
#: Seconds between pings; a client that does not answer within half of it is dropped.
HEARTBEAT: Final = 20.0
#: Frames that may wait for one client (replies, pushes, group messages); more: 1013.
SEND_QUEUE: Final = 64
#: Rule calls one connection may have running at once (more: ``too_many_tasks``).
MAX_TASKS: Final = 32
