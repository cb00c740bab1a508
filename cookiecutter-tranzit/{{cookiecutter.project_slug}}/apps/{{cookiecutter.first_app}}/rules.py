"""Websocket rules of the {{ cookiecutter.first_app }} app: a clock, an echo and a chat room.

A rule is called ``rule(conn, *args)`` for each message ``rule|arg1,arg2`` (or
its JSON form) and what it returns is the reply. Each call runs as its own
task; when the client goes away, tranzit cancels it, so an endless rule needs
no clean-up of its own. Everything sent to one client (replies, pushes, group
messages) reaches it in the order it was sent.
"""

import asyncio
{%- if cookiecutter.database == "postgres" %}
import logging
{%- endif %}
import re
import socket
import time
{% if cookiecutter.database == "postgres" %}
import asyncpg
{%- endif %}
from tranzit import RuleError
{%- if cookiecutter.database == "postgres" %}
from tranzit.db import DB
{%- endif %}
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
{%- if cookiecutter.database == "postgres" %}
# Every message is also kept in Postgres (the table chat_message, made by
# migrations/versions/0001_chat_history.py): who joins a room gets its latest
# ones first, as ``history|<room>,<name>,<text>``, oldest first.
{%- endif %}

ROOM = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_TEXT = 500
{%- if cookiecutter.database == "postgres" %}
HISTORY = 50
# Seconds a rule waits for the database before it answers db_unavailable.
DB_TIMEOUT = 5.0
# What reaching the database raises: a refused, lost or slow connection, or an
# error from the server (the migrations not applied yet, for one).
DB_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
LATEST = """
    SELECT name, body FROM (
        SELECT id, name, body FROM chat_message WHERE room = $1 ORDER BY id DESC LIMIT $2
    ) AS latest ORDER BY id
"""

log = logging.getLogger(__name__)
{%- endif %}


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
{%- if cookiecutter.database == "postgres" %}


async def _db(conn: Connection, query: str, *args: object) -> list[asyncpg.Record]:
    """``query``'s rows from the app's pool; trouble with the database is an error reply."""
    pool = conn.request.app.get(DB)
    if pool is None:
        # `tranzit run` without TRANZIT_DATABASE_URL: say what to set (README.md, Database).
        raise RuleError(
            "the chat needs a database: set TRANZIT_DATABASE_URL", code="db_unavailable"
        )
    try:
        return await asyncio.wait_for(pool.fetch(query, *args), DB_TIMEOUT)
    except DB_ERRORS as exc:
        # One line for the operator; the client gets error|db_unavailable,... and no traceback.
        log.warning("chat: the database is unavailable: %s: %s", type(exc).__name__, exc)
        raise RuleError("the chat is unavailable, try again later", code="db_unavailable") from None
{%- endif %}
{%- if cookiecutter.database == "postgres" %}


def _in_turn(conn: Connection) -> asyncio.Lock:
    """This client's chat calls, one at a time and in the order they came.

    Each call is a task of its own, and they wait for the database: without
    this, two messages could be stored and sent in either order.
    """
    return conn.state.setdefault("chat_turn", asyncio.Lock())


async def join(conn: Connection, room: str) -> str:
    """Join chat ``room``; the reply is ``join|<room>,<your id>,<server>``.

    ``server`` is the host name of the process holding this connection: with
    several ws replicas it shows which one the client reached. A new member
    first gets the room's last messages (``history|...``), then the notice.
    """
    group = _group(room)
    async with _in_turn(conn):
        if group not in conn.groups:
            # The history is read before joining: a message said in between reaches
            # this member neither from the history nor live (a small window; joining
            # first would show it twice instead). Groups' v2 positions (conn.join(group,
            # since=...), tranzit's docs/groups.md) are the race-free tool for that.
            for name, text in await _db(conn, LATEST, room, HISTORY):
                await conn.send_text(f"history|{room},{name},{text}")
            conn.join(group)
            await _tell(conn, group, f"chat|{room},*,{conn.user} joined")
    return f"{room},{conn.id},{socket.gethostname()}"


async def say(conn: Connection, room: str, text: str) -> None:
    """Send ``text`` to everyone in ``room`` (the sender too), on every replica.

    It is kept in the room's history first: a message the database did not take
    is not sent (``error|db_unavailable,...``).
    """
    group = _group(room)
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        raise RuleError(f"a message is 1-{MAX_TEXT} characters", code="bad_text")
    async with _in_turn(conn):
        if group not in conn.groups:
            raise RuleError(f"join the room {room!r} first", code="not_joined")
        insert = "INSERT INTO chat_message (room, name, body) VALUES ($1, $2, $3)"
        await _db(conn, insert, room, conn.user, text)
        await _tell(conn, group, f"chat|{room},{conn.user},{text}")
{%- else %}


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
{%- endif %}


async def leave(conn: Connection, room: str) -> None:
    """Leave ``room`` (closing the connection leaves every room)."""
    group = _group(room)
{%- if cookiecutter.database == "postgres" %}
    # In turn with join and say: a leave sent right after a join that still reads
    # the history waits for it, instead of finding nothing to leave.
    async with _in_turn(conn):
        if group in conn.groups:
            conn.leave(group)
            await _tell(conn, group, f"chat|{room},*,{conn.user} left")
{%- else %}
    if group in conn.groups:
        conn.leave(group)
        await _tell(conn, group, f"chat|{room},*,{conn.user} left")
{%- endif %}
