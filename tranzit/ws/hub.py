"""Groups and broadcast: send to one connection, a group, or everyone, on every replica.

A :class:`Hub` holds this process's connections and is the only keeper of
who is in which group. Publishing delivers to the local members at once and
hands the message to a backend (:mod:`tranzit.ws.backplane`), which carries
it to the other replicas.

Delivery to each connection goes through that connection's ordered outbound
path (:mod:`tranzit.ws.outbound`): after whatever was sent to it before,
never waiting on it. A client over a send bound is closed with 1013 (try
again later), so a slow client never delays the others: its own bounds
(``send_queue`` frames, ``send_buffer`` bytes, ``send_timeout`` seconds), and
``send_buffer_total`` bytes for all the clients of this hub together, which
closes the client whose frame went over it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

from aiohttp import web

from ..errors import TranzitError
from ..limits import BROADCAST_TIMEOUT, SEND_BUFFER, SEND_BUFFER_TOTAL, SEND_QUEUE, SEND_TIMEOUT
from .backplane import Backend, BroadcastUnavailable, Envelope, LocalBackend
from .connection import Connection, ConnectionRegistry
from .outbound import SendBudget

__all__ = ["HUB", "BroadcastUnavailable", "Envelope", "Hub", "create_backend"]

log = logging.getLogger("tranzit.ws")


def create_backend(url: str | None, *, timeout: float = BROADCAST_TIMEOUT) -> Backend:
    """The backend for ``broadcast_url``: none → in-process; ``redis://…`` → Redis pub/sub."""
    if not url:
        return LocalBackend()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_backend import RedisBackend

        backend: Backend = RedisBackend(url, timeout=timeout)
        return backend
    raise TranzitError(f"broadcast_url: expected redis://, rediss:// or unix://, found {url!r}")


class Hub:
    """This process's connections, their groups, and the way to every other replica."""

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        send_queue: int = SEND_QUEUE,
        send_buffer: int = SEND_BUFFER,
        send_buffer_total: int = SEND_BUFFER_TOTAL,
        send_timeout: float | None = SEND_TIMEOUT,
    ) -> None:
        self.id = secrets.token_hex(6)
        self.connections = ConnectionRegistry()
        self.backend: Backend = backend or LocalBackend()
        # Read by each connection when it opens (tranzit.limits says what each is).
        #: Frames that may wait for one client.
        self.send_queue = send_queue
        #: Bytes that may wait for one client, queued and in its socket's buffer.
        self.send_buffer = send_buffer
        #: Seconds a frame may wait to be handed to a client's socket (None: no limit).
        self.send_timeout = send_timeout
        #: Bytes waiting for all of this hub's clients, and ``limit``: send_buffer_total.
        self.send_budget = SendBudget(send_buffer_total)
        self._groups: dict[str, set[Connection]] = {}
        self._memberships: dict[Connection, set[str]] = {}
        self._started = False

    # Membership ----------------------------------------------------------

    def join(self, conn: Connection, group: str) -> None:
        self._groups.setdefault(group, set()).add(conn)
        self._memberships.setdefault(conn, set()).add(group)

    def leave(self, conn: Connection, group: str) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.discard(conn)
            if not members:
                del self._groups[group]
        groups = self._memberships.get(conn)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._memberships[conn]

    def groups_of(self, conn: Connection) -> frozenset[str]:
        return frozenset(self._memberships.get(conn, ()))

    def forget(self, conn: Connection) -> None:
        """A connection closed: it leaves every group and the registry."""
        for group in self._memberships.pop(conn, ()):
            members = self._groups.get(group)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self._groups[group]
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
        self._deliver_local(envelope)
        await self.backend.publish(envelope)

    async def _receive(self, envelope: Envelope) -> None:
        if envelope.origin != self.id:  # our own were delivered when published
            self._deliver_local(envelope)

    def _deliver_local(self, envelope: Envelope) -> None:
        """Hand ``envelope`` to each local target's outbound path, never waiting."""
        if envelope.kind == "conn":
            conn = self.connections.get(envelope.target)
            targets: list[Connection] = [conn] if conn is not None else []
        elif envelope.kind == "group":
            targets = list(self._groups.get(envelope.target, ()))
        else:
            targets = list(self.connections)
        text = envelope.text
        for conn in targets:
            conn.offer(text)

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
