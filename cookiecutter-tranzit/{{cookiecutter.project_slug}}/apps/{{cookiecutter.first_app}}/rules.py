"""Websocket rules of the {{ cookiecutter.first_app }} app: a clock, an echo and a chat room.

A rule is called ``rule(conn, *args)`` for each message ``rule|arg1,arg2`` (or
its JSON form) and what it returns is the reply. Each call runs as its own
task; when the client goes away, tranzit cancels it, so an endless rule needs
no clean-up of its own. Everything sent to one client (replies, pushes, group
messages) reaches it in the order it was sent.
"""

import asyncio
import re
import socket
import time

from tranzit import RuleError
from tranzit.ws import BroadcastUnavailable, Connection


async def clock(conn: Connection) -> None:
    """Push the server's time every second, forever (``clock|`` starts it).

    Each message is ``clock|HH:MM:SS``, which the page's ``tz.on("clock", ...)`` shows.
    """
    while True:
        await conn.send_text("clock|" + time.strftime("%H:%M:%S"))
        await asyncio.sleep(1)


async def echo(conn: Connection, text: str) -> str:
    """The return value is the reply: ``echo|<text>``, or the result of a JSON call."""
    return text


# A small chat on groups: every member of a room gets what anyone in it says,
# whichever ws replica either of them is connected to (with Redis; see
# TRANZIT_BROADCAST_URL in .env.example). Members are pushed ``chat|<room>,<name>,<text>``.
# The name is ``conn.user``: what routes.py's ``ws_connect`` found in the session
# when the websocket opened, never a name the client sends.

ROOM = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_TEXT = 500


def _group(room: str) -> str:
    if not ROOM.fullmatch(room):
        # A deliberate error reply (error|bad_room,...), not a failure: no traceback logged.
        raise RuleError("a room name is 1-32 letters, digits, '-' or '_'", code="bad_room")
    return f"chat:{room}"


async def _tell(conn: Connection, group: str, text: str) -> None:
    try:
        await conn.hub.send_group(group, text)
    except BroadcastUnavailable:
        # The members on this server have it; the others cannot be reached now.
        await conn.send_text("chat_warning|only the members on this server got the last message")


async def join(conn: Connection, room: str) -> str:
    """Join chat ``room``; the reply is ``join|<room>,<your id>,<server>``.

    ``server`` is the host name of the process holding this connection: with
    several ws replicas it shows which one the client reached.
    """
    group = _group(room)
    if group not in conn.groups:
        conn.join(group)
        await _tell(conn, group, f"chat|{room},*,{conn.user} joined")
    return f"{room},{conn.id},{socket.gethostname()}"


async def say(conn: Connection, room: str, text: str) -> None:
    """Send ``text`` to everyone in ``room`` (the sender too), on every replica."""
    group = _group(room)
    if group not in conn.groups:
        raise RuleError(f"join the room {room!r} first", code="not_joined")
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        raise RuleError(f"a message is 1-{MAX_TEXT} characters", code="bad_text")
    await _tell(conn, group, f"chat|{room},{conn.user},{text}")


async def leave(conn: Connection, room: str) -> None:
    """Leave ``room`` (closing the connection leaves every room)."""
    group = _group(room)
    if group in conn.groups:
        conn.leave(group)
        await _tell(conn, group, f"chat|{room},*,{conn.user} left")
