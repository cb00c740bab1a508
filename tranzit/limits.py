"""Every bound and timeout's default, defined once.

:class:`~tranzit.config.Config`, the endpoint, the hub, the backends, the
HTTP server and the 2018 ``WebSocketServer`` all take their defaults from
here (``docs/limits.md`` says what a client sees when one is reached).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BODY_TIMEOUT",
    "BROADCAST_TIMEOUT",
    "DRAIN_TIME",
    "HEADER_TIMEOUT",
    "HEARTBEAT",
    "HISTORY_AGE",
    "HISTORY_SIZE",
    "JSON_MAX_DEPTH",
    "KEEPALIVE_TIMEOUT",
    "MAX_BODY_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_TASKS",
    "SEND_BUFFER",
    "SEND_BUFFER_TOTAL",
    "SEND_QUEUE",
    "SEND_TIMEOUT",
]

MiB: Final = 1024 * 1024

# Websockets ---------------------------------------------------------------
#: Largest message a client may send, in bytes (larger: closed with 1009).
MAX_MESSAGE_SIZE: Final = 1 * MiB
#: Deepest nesting of arrays and objects in a JSON call (deeper: an error reply).
JSON_MAX_DEPTH: Final = 32
#: Seconds between pings; a client that does not answer within half of it is dropped.
HEARTBEAT: Final = 20.0
#: Frames that may wait for one client (replies, pushes, group messages); more: 1013.
SEND_QUEUE: Final = 64
#: Bytes that may wait for one client, queued and in the socket's buffer; more: 1013.
SEND_BUFFER: Final = 4 * MiB
#: Bytes that may wait for all clients of one process together; more: the client
#: whose frame went over is closed with 1013.
SEND_BUFFER_TOTAL: Final = 256 * MiB
#: Seconds a frame may wait for a client that does not read; then it is dropped (1013).
SEND_TIMEOUT: Final = 30.0
#: Rule calls one connection may have waiting at once (more: ``too_many_tasks``).
MAX_TASKS: Final = 32

# The broadcast backend ----------------------------------------------------
#: Seconds a publish may wait for Redis before it is BroadcastUnavailable.
BROADCAST_TIMEOUT: Final = 2.0
#: Messages kept per group for clients that reconnect (older ones: a gap).
HISTORY_SIZE: Final = 1000
#: Seconds a group message is kept for clients that reconnect.
HISTORY_AGE: Final = 300.0
#: Seconds over which a stopping websocket server closes its clients, in batches.
DRAIN_TIME: Final = 5.0

# HTTP (nginx's defaults, where nginx has one) --------------------------------
#: Seconds a client has to send a request's headers (nginx: client_header_timeout 60s).
HEADER_TIMEOUT: Final = 60.0
#: Seconds a request body may pause between two reads (nginx: client_body_timeout 60s).
BODY_TIMEOUT: Final = 60.0
#: Seconds an idle keep-alive connection stays open (nginx: keepalive_timeout 75s).
KEEPALIVE_TIMEOUT: Final = 75.0
#: Largest request body, in bytes (nginx's client_max_body_size in the stack: 10m).
MAX_BODY_SIZE: Final = 10 * MiB
