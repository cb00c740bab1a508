"""Groups and broadcast: send to one connection, a group, or everyone, on every replica.

A :class:`Hub` holds this process's connections and their groups. Publishing
delivers to the local members at once and hands the message to a backend,
which carries it to the other replicas (:class:`LocalBackend`: nowhere, for a
single process; :class:`tranzit.ws.redis_backend.RedisBackend`: Redis pub/sub).

Delivery to each connection goes through that connection's bounded outbox, so
a slow client never delays the others: when its outbox is full it is closed
with 1013 (try again later) and the event is logged.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from aiohttp import web

from ..errors import TranzitError
from .connection import Connection, ConnectionRegistry

__all__ = [
    "HUB",
    "BroadcastUnavailable",
    "Envelope",
    "Hub",
    "LocalBackend",
    "create_backend",
]

log = logging.getLogger("tranzit.ws")

Target = Literal["conn", "group", "all"]


class BroadcastUnavailable(TranzitError):
    """The broadcast backend (Redis) cannot be reached; local members were still served."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One published message: who it is for, what it says, which hub sent it."""

    kind: Target
    target: str
    text: str
    origin: str

    def dumps(self) -> str:
        return json.dumps([self.kind, self.target, self.text, self.origin], ensure_ascii=False)

    @classmethod
    def loads(cls, data: str | bytes) -> Envelope:
        kind, target, text, origin = json.loads(data)
        if kind not in ("conn", "group", "all"):
            raise ValueError(f"unknown envelope kind {kind!r}")
        return cls(kind, str(target), str(text), str(origin))


Deliver = Callable[[Envelope], Awaitable[None]]


class Backend(Protocol):
    async def start(self, deliver: Deliver) -> None: ...
    async def publish(self, envelope: Envelope) -> None: ...
    async def close(self) -> None: ...


class LocalBackend:
    """No other replicas: publishing has nothing more to do."""

    async def start(self, deliver: Deliver) -> None:
        return None

    async def publish(self, envelope: Envelope) -> None:
        return None

    async def close(self) -> None:
        return None


def create_backend(url: str | None) -> Backend:
    """The backend for ``broadcast_url``: none → in-process; ``redis://…`` → Redis pub/sub."""
    if not url:
        return LocalBackend()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_backend import RedisBackend

        backend: Backend = RedisBackend(url)
        return backend
    raise TranzitError(f"broadcast_url: expected redis://, rediss:// or unix://, found {url!r}")


class Hub:
    """This process's connections, their groups, and the way to every other replica."""

    def __init__(self, backend: Backend | None = None, *, outbox_size: int = 64) -> None:
        self.id = secrets.token_hex(6)
        self.connections = ConnectionRegistry()
        self.backend: Backend = backend or LocalBackend()
        self.outbox_size = outbox_size
        self._groups: dict[str, set[Connection]] = {}
        self._started = False

    # Membership ----------------------------------------------------------

    def join(self, conn: Connection, group: str) -> None:
        self._groups.setdefault(group, set()).add(conn)
        conn.groups.add(group)

    def leave(self, conn: Connection, group: str) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.discard(conn)
            if not members:
                del self._groups[group]
        conn.groups.discard(group)

    def forget(self, conn: Connection) -> None:
        """A connection closed: it leaves every group and the registry."""
        for group in list(conn.groups):
            self.leave(conn, group)
        self.connections.discard(conn)

    def members(self, group: str) -> Iterator[Connection]:
        """Local members of ``group`` (other replicas have their own)."""
        return iter(list(self._groups.get(group, ())))

    # Publishing ------------------------------------------------------------

    async def send(self, connection_id: str, text: str) -> None:
        """Send to one connection, wherever it is connected."""
        await self.publish(Envelope("conn", connection_id, text, self.id))

    async def send_group(self, group: str, text: str) -> None:
        """Send to every member of ``group`` on every replica."""
        await self.publish(Envelope("group", group, text, self.id))

    async def broadcast(self, text: str) -> None:
        """Send to every connection on every replica."""
        await self.publish(Envelope("all", "", text, self.id))

    async def publish(self, envelope: Envelope) -> None:
        """Deliver locally now, then to the other replicas.

        Raises :class:`BroadcastUnavailable` when the backend cannot carry it;
        the local members have received it by then.
        """
        await self._deliver_local(envelope)
        await self.backend.publish(envelope)

    async def _receive(self, envelope: Envelope) -> None:
        if envelope.origin != self.id:  # our own were delivered when published
            await self._deliver_local(envelope)

    async def _deliver_local(self, envelope: Envelope) -> None:
        """Hand ``envelope`` to each local target, never waiting on a slow one.

        A client where the write cannot wait (:meth:`Connection.ready_now`) gets
        the text at once; any other through its bounded outbox. Nothing here
        suspends in practice, so no recipient waits on another.
        """
        if envelope.kind == "conn":
            conn = self.connections.get(envelope.target)
            targets: list[Connection] = [conn] if conn is not None else []
        elif envelope.kind == "group":
            targets = list(self._groups.get(envelope.target, ()))
        else:
            targets = list(self.connections)
        text = envelope.text
        for conn in targets:
            if conn.ready_now(text):
                await conn.send_now(text)
            elif not conn.offer(text, self.outbox_size):
                log.warning(
                    "connection %s is too slow: its outbox of %d messages is full; closing it",
                    conn.id,
                    self.outbox_size,
                )

    # Lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.backend.start(self._receive)

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.backend.close()


HUB = web.AppKey("tranzit.ws.hub", Hub)
