"""Groups and broadcast: send to one connection, a group, or everyone, on every replica.

A :class:`Hub` holds this process's connections and is the only keeper of
who is in which group. Publishing hands the message to a backend
(:mod:`tranzit.ws.backplane`), which carries it to every replica.

Group messages are kept in a capped history per group and get a
:class:`~tranzit.ws.backplane.Position`. A connection that joins learns its
join point; one that comes back (``since=``) is sent what it missed, in
order, before anything live, or is told it cannot be (``recovered: False``).
While a join point is being looked up, live messages for that group are held
for that connection, so nothing slips between the history and the live
stream. With Redis, the look-up publishes a marker on the channel: once this
hub hears it, everything up to the join point has been heard too.

Delivery to each connection goes through that connection's ordered outbound
path (:mod:`tranzit.ws.outbound`): after whatever was sent to it before,
never waiting on it. A client over a send bound is closed with 1013 (try
again later), so a slow client never delays the others: its own bounds
(``send_queue`` frames, ``send_buffer`` bytes, ``send_timeout`` seconds), and
``send_buffer_total`` bytes for all the clients of this hub together, which
closes the client whose frame went over it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import Any, NamedTuple

from aiohttp import web

from ..errors import TranzitError
from ..limits import (
    BROADCAST_TIMEOUT,
    HISTORY_AGE,
    HISTORY_SIZE,
    SEND_BUFFER,
    SEND_BUFFER_TOTAL,
    SEND_QUEUE,
    SEND_TIMEOUT,
)
from .backplane import (
    Backend,
    BroadcastIncomplete,
    BroadcastUnavailable,
    Envelope,
    LocalBackend,
    Position,
    Sync,
    offset_key,
)
from .connection import Connection, ConnectionRegistry
from .outbound import SendBudget
from .protocol import dumps
from .rules import RuleError
from .stats import Stats

__all__ = [
    "HUB",
    "BroadcastUnavailable",
    "Envelope",
    "Hub",
    "Position",
    "Recovery",
    "create_backend",
]

log = logging.getLogger("tranzit.ws")

#: Targets of tranzit's own envelopes start with it (never a group a project names).
INTERNAL = "\x00"
#: Presence events of group G go to the pseudo-group PRESENCE + G.
PRESENCE = "\x00presence\x00"
#: Sync markers: a conn-kind envelope to MARKER + hub id + token.
MARKER = "\x00sync\x00"
#: The join point when the history could not be looked up (no epoch matches it).
UNKNOWN = Position("", "0-0")
#: Seconds a resume ticket stays valid (re-issued with every join and recovery).
TICKET_AGE = 86400
#: Most groups one ``tz.resume`` call may name.
RESUME_GROUPS = 1000


def create_backend(
    url: str | None,
    *,
    timeout: float = BROADCAST_TIMEOUT,
    history_size: int = HISTORY_SIZE,
    history_age: float = HISTORY_AGE,
) -> Backend:
    """The backend for ``broadcast_url``: none → in-process; ``redis://…`` → Redis."""
    if not url:
        return LocalBackend(history_size=history_size, history_age=history_age)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_backend import RedisBackend

        backend: Backend = RedisBackend(
            url, timeout=timeout, history_size=history_size, history_age=history_age
        )
        return backend
    raise TranzitError(f"broadcast_url: expected redis://, rediss:// or unix://, found {url!r}")


class Recovery(NamedTuple):
    """What a join found: ``recovered`` None (nothing asked), True (all replayed), False (a gap).

    ``position`` is the join point (None when no history is kept or the
    backend could not be reached).
    """

    group: str
    recovered: bool | None
    replayed: int
    position: Position | None


class Joined:
    """What :meth:`Connection.join` returns: awaiting it gives the :class:`Recovery`.

    Awaiting is optional (``conn.join(room)`` joins at once, as it always did).
    """

    __slots__ = ("_result", "_task")

    def __init__(
        self, result: Recovery | None = None, task: asyncio.Task[Recovery] | None = None
    ) -> None:
        self._result = result
        self._task = task

    def __await__(self) -> Generator[Any, None, Recovery]:
        if self._task is not None:
            return (yield from self._task.__await__())
        assert self._result is not None
        return self._result


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
        #: Counters for ``/metrics``.
        self.stats = Stats()
        #: Set when the server is stopping: ``/readyz`` fails, clients are being closed.
        self.draining = False
        #: The key resume tickets are signed with (the apps set the project's: every
        #: replica with the same secret accepts the others' tickets).
        self.ticket_key: Callable[[], bytes] = _random_key()
        self._groups: dict[str, set[Connection]] = {}
        self._memberships: dict[Connection, set[str]] = {}
        # Joins whose join point is being looked up: what arrived for them meanwhile.
        self._joining: dict[str, dict[Connection, list[Envelope]]] = {}
        # Per group with local members: the newest position delivered or synced here.
        self._last: dict[str, Position] = {}
        # Groups being looked up again after an outage: what arrived meanwhile.
        self._resyncing: dict[str, list[Envelope]] = {}
        self._present: dict[Connection, set[str]] = {}
        self._watchers: dict[str, set[Connection]] = {}
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    # Membership ----------------------------------------------------------

    def join(
        self,
        conn: Connection,
        group: str,
        *,
        since: Position | None = None,
        presence: bool = False,
        presence_events: bool = False,
    ) -> Joined:
        """Add ``conn`` to ``group`` now; the :class:`Joined` gives the join point when awaited.

        ``since``: the position the client saw last; what came after it is
        sent first (or ``recovered: False`` when some of it is gone).
        ``presence``: count it in :meth:`presence_count`/:meth:`presence`.
        ``presence_events``: send it the group's join/leave events.
        """
        if not isinstance(group, str) or not group or group.startswith(INTERNAL):
            raise ValueError(f"group names are non-empty strings, found {group!r}")
        groups = self._memberships.setdefault(conn, set())
        already = group in groups
        groups.add(group)
        if presence_events:
            self._watchers.setdefault(group, set()).add(conn)
        if presence and group not in self._present.get(conn, ()):
            self._presence_join(conn, group)
        if already and since is None:
            return Joined(Recovery(group, None, 0, self._last.get(group)))
        if not self.backend.history or (since is None and not conn.v2):
            self._settled(conn, group)
            return Joined(Recovery(group, None if since is None else False, 0, None))
        if since is None and group not in self._resyncing:
            point = self._last.get(group) if group in self._groups else None
            point = point or self.backend.top_now(group)
            if point is not None:  # known now: later messages all come after it
                self._settled(conn, group)
                self._advance(group, point)
                self._notify(conn, "joined", group, point)
                return Joined(Recovery(group, None, 0, point))
        self._groups.get(group, set()).discard(conn)
        self._joining.setdefault(group, {})[conn] = []
        task = self._spawn(self._settle(conn, group, since), f"tranzit-join-{conn.id}")
        return Joined(task=task)

    def _settled(self, conn: Connection, group: str) -> None:
        self._groups.setdefault(group, set()).add(conn)

    def leave(self, conn: Connection, group: str) -> None:
        if group not in self._memberships.get(conn, ()):
            return
        _discard(self._memberships, conn, group)
        self._drop(conn, group)
        if conn.v2 and not conn.closed:
            conn.offer(dumps({"tz": "left", "group": group}))

    def _drop(self, conn: Connection, group: str) -> None:
        _discard(self._groups, group, conn)
        _discard(self._joining, group, conn)
        _discard(self._watchers, group, conn)
        if group in self._present.get(conn, ()):
            self._presence_leave(conn, group)
        if group not in self._groups and group not in self._joining:
            self._last.pop(group, None)

    def groups_of(self, conn: Connection) -> frozenset[str]:
        return frozenset(self._memberships.get(conn, ()))

    def forget(self, conn: Connection) -> None:
        """A connection closed: it leaves every group and the registry."""
        for group in self._memberships.pop(conn, ()):
            self._drop(conn, group)
        self.connections.discard(conn)

    def members(self, group: str) -> Iterator[Connection]:
        """Local members of ``group`` (other replicas have their own)."""
        return iter(list(self._groups.get(group, ())))

    # Publishing ------------------------------------------------------------

    async def send(self, connection_id: str, text: str) -> None:
        """Send to one connection, wherever it is connected."""
        await self.publish(Envelope("conn", connection_id, text, self.id))

    async def send_group(self, group: str, text: str) -> Position | None:
        """Send to every member of ``group`` on every replica; returns its position in history."""
        return await self.publish(Envelope("group", group, text, self.id))

    async def broadcast(self, text: str) -> None:
        """Send to every connection on every replica."""
        await self.publish(Envelope("all", "", text, self.id))

    async def publish(self, envelope: Envelope) -> Position | None:
        """Deliver ``envelope`` on every replica; a group message is kept in history too.

        Raises :class:`BroadcastUnavailable` when the backend cannot carry it;
        this replica's members have received it by then (a group message then
        has no position: it is in no history).
        """
        backend = self.backend
        if (
            envelope.kind == "group"
            and backend.history
            and not envelope.target.startswith(INTERNAL)
        ):
            try:
                # Delivered here too by the backend, in the history's order.
                return await backend.publish_group(envelope)
            except BroadcastIncomplete:
                self.stats.publish_errors += 1
                raise
            except BroadcastUnavailable as exc:
                self.stats.publish_errors += 1
                # Not when Redis may still carry it out: it would come back from the
                # channel too, and this replica's members would get it twice.
                if not exc.maybe_sent:
                    self._deliver_local(envelope)
                raise
        self._deliver_local(envelope)
        try:
            await backend.publish(envelope)
        except BroadcastUnavailable:
            self.stats.publish_errors += 1
            raise
        return None

    async def _receive(self, envelope: Envelope) -> None:
        if envelope.position is not None or envelope.origin != self.id:
            self._deliver_local(envelope)
        elif envelope.kind == "conn" and envelope.target.startswith(MARKER):
            marker = self._markers.pop(envelope.target, None)
            if marker is not None and not marker.done():
                marker.set_result(None)

    def _deliver_local(self, envelope: Envelope) -> None:
        """Hand ``envelope`` to each local target's outbound path, never waiting."""
        kind = envelope.kind
        if kind == "group":
            group = envelope.target
            position = envelope.position
            if position is not None:
                self.stats.lag.observe(max(0.0, time.time() - position.key[0] / 1000))
                held = self._resyncing.get(group)
                if held is not None:
                    held.append(envelope)
                    return
                if group in self._last or group in self._groups or group in self._joining:
                    self._last[group] = position
            elif group.startswith(PRESENCE):
                for conn in list(self._watchers.get(group[len(PRESENCE) :], ())):
                    conn.offer(envelope.text)
                return
            joining = self._joining.get(group)
            if joining:
                for waiting in joining.values():
                    waiting.append(envelope)
            members = self._groups.get(group)
            if not members:
                return
            text = envelope.text
            framed = None
            for conn in list(members):
                if position is not None and conn.v2:
                    if framed is None:
                        framed = _frame(envelope, position)
                    conn.offer(framed)
                else:
                    conn.offer(text)
            return
        if kind == "conn":
            target = self.connections.get(envelope.target)
            if target is not None:
                target.offer(envelope.text)
            return
        text = envelope.text
        for conn in list(self.connections):
            conn.offer(text)

    def _offer(self, conn: Connection, envelope: Envelope) -> None:
        """One group message to one connection (framed with its position for v2 clients)."""
        if envelope.position is not None and conn.v2:
            conn.offer(_frame(envelope, envelope.position))
        else:
            conn.offer(envelope.text)

    # Join points and recovery ------------------------------------------------

    def _advance(self, group: str, position: Position) -> None:
        last = self._last.get(group)
        if last is None or position.after(last) or position.epoch != last.epoch:
            self._last[group] = position

    async def _sync(self, group: str, since: Position | None) -> Sync:
        """The backend's sync; with Redis, also waits until this hub heard its marker."""
        if not self.backend.marks:
            return await self.backend.sync(group, since)
        name = f"{MARKER}{self.id}\x00{secrets.token_hex(6)}"
        heard = asyncio.get_running_loop().create_future()
        self._markers[name] = heard
        try:
            marker = Envelope("conn", name, "", self.id).dumps()
            sync = await self.backend.sync(group, since, marker=marker)
            # Heard: whatever the channel carried before the marker has been delivered.
            await asyncio.wait_for(heard, BROADCAST_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("broadcast: no sync marker for group %r; going on without it", group)
        finally:
            self._markers.pop(name, None)
        return sync

    async def _settle(self, conn: Connection, group: str, since: Position | None) -> Recovery:
        sync: Sync | None
        try:
            sync = await self._sync(group, since)
        except BroadcastUnavailable as exc:
            log.warning("websocket %s: cannot look up group %r: %s", conn.id, group, exc)
            sync = None
        held = self._joining.get(group, {}).pop(conn, None)
        if not self._joining.get(group, True):
            del self._joining[group]
        if held is None or group not in self._memberships.get(conn, ()):
            return Recovery(group, None, 0, None)  # left, or closed, meanwhile
        self._settled(conn, group)
        if sync is None:  # no history to go by: what arrived meanwhile, and live from now on
            for envelope in held:
                self._offer(conn, envelope)
            # The client still gets its ticket (a resume from the messages it saw
            # since), with a position of no epoch: one from it alone is a gap.
            if since is not None:
                self.stats.recoveries_gap += 1
                self._notify(conn, "recovery", group, UNKNOWN, recovered=False, replayed=0)
            else:
                self._notify(conn, "joined", group, UNKNOWN)
            return Recovery(group, False if since is not None else None, 0, None)
        point = sync.top
        replayed = 0
        if sync.recovered:
            for position, text in sync.entries:
                self._offer(conn, Envelope("group", group, text, "", position))
            replayed = len(sync.entries)
            self.stats.recoveries_ok += 1
            self.stats.replayed += replayed
        elif sync.recovered is False:
            self.stats.recoveries_gap += 1
        if since is None:
            self._notify(conn, "joined", group, point)
        else:
            self._notify(
                conn, "recovery", group, point, recovered=bool(sync.recovered), replayed=replayed
            )
        for envelope in held:
            at = envelope.position
            if at is None or at.after(point) or at.epoch != point.epoch:
                self._offer(conn, envelope)
        self._advance(group, point)
        return Recovery(group, sync.recovered, replayed, point)

    def _notify(
        self,
        conn: Connection,
        what: str,
        group: str,
        point: Position | None,
        **extra: Any,
    ) -> None:
        """A ``joined`` or ``recovery`` frame for a v2 client, with its point and a new ticket."""
        if not conn.v2 or conn.closed:
            return
        frame: dict[str, Any] = {"tz": what, "group": group, **extra}
        if point is not None:
            frame.update(point.as_dict(), ticket=self.ticket(conn, group))
        conn.offer(dumps(frame))

    def resync(self) -> None:
        """The backend is back after an outage: look up what each local group missed.

        Live messages of those groups are held from now on (not from when the
        look-up starts), so none is both delivered live and replayed.
        """
        groups = [g for g in self._groups if g not in self._resyncing]
        for group in groups:
            self._resyncing[group] = []
        if groups or self._present:
            self._spawn(self._resync_all(groups), "tranzit-resync")

    async def _resync_all(self, groups: list[str]) -> None:
        await asyncio.gather(*(self._resync_group(group) for group in groups))
        for conn, present in list(self._present.items()):
            for group in present:
                await self._quietly(self.backend.presence_add(group, conn.id, _info(conn)))

    async def _resync_group(self, group: str) -> None:
        since = self._last.get(group)
        sync: Sync | None = None
        try:
            sync = await self._sync(group, since)
        except BroadcastUnavailable as exc:
            log.warning("broadcast: cannot look up group %r again: %s", group, exc)
        held = self._resyncing.pop(group, [])
        if sync is not None and sync.recovered:
            for position, text in sync.entries:
                self._deliver_local(Envelope("group", group, text, "", position))
            self.stats.replayed += len(sync.entries) * len(self._groups.get(group, ()))
        elif sync is not None:
            # Gone, or no position to ask from: members that can tell the page are told,
            # then get what a new history (Redis restarted empty) holds since it began.
            for conn in list(self._groups.get(group, ())):
                if conn.v2:
                    self.stats.recoveries_gap += 1
                    self._notify(conn, "recovery", group, sync.top, recovered=False, replayed=0)
            for position, text in sync.entries:
                self._deliver_local(Envelope("group", group, text, "", position))
            self._last[group] = sync.top
        for envelope in held:
            at = envelope.position
            if sync is None or at is None or at.after(sync.top):
                self._deliver_local(envelope)
        if sync is not None and group in self._groups:
            self._advance(group, sync.top)

    # Tickets ------------------------------------------------------------------

    def ticket(self, conn: Connection, group: str) -> str:
        """A signed ticket that lets this client re-join ``group`` on a later connection."""
        import jwt

        claims = {
            "g": group,
            "u": _identity(conn.user),
            "exp": int(time.time()) + TICKET_AGE,
            # How it had joined, so that a resume joins the same way.
            "p": group in self._present.get(conn, ()),
            "e": conn in self._watchers.get(group, ()),
        }
        return jwt.encode(claims, self.ticket_key(), algorithm="HS256")

    def ticket_allows(self, conn: Connection, group: str, ticket: Any) -> dict[str, Any] | None:
        """The join options in ``ticket`` if it was issued for ``group`` to this client's
        identity and has not expired; None otherwise."""
        import jwt

        if not isinstance(ticket, str) or len(ticket) > 4096:
            return None
        try:
            claims = jwt.decode(ticket, self.ticket_key(), algorithms=["HS256"])
        except jwt.InvalidTokenError:
            return None
        if claims.get("g") != group or claims.get("u") != _identity(conn.user):
            return None
        return {"presence": bool(claims.get("p")), "presence_events": bool(claims.get("e"))}

    async def resume(self, conn: Connection, groups: Any) -> dict[str, bool | str]:
        """The built-in rule ``tz.resume``: re-join each group whose ticket is valid, from
        the position given, and say per group True (replayed), False (a gap) or "refused"."""
        if not isinstance(groups, dict) or len(groups) > RESUME_GROUPS:
            raise RuleError(
                f"expected an object of at most {RESUME_GROUPS} groups, each "
                '{"epoch": ..., "offset": ..., "ticket": ...}',
                code="bad_arguments",
            )
        results: dict[str, bool | str] = {}
        joins: list[Joined] = []
        for group, seen in groups.items():
            options = (
                self.ticket_allows(conn, group, seen.get("ticket"))
                if isinstance(seen, dict)
                else None
            )
            since = _position(seen) if options is not None else None
            if options is None or since is None:
                results[group] = "refused"
                continue
            joins.append(self.join(conn, group, since=since, **options))
        for recovery in await asyncio.gather(*(_result(j) for j in joins)):
            results[recovery.group] = bool(recovery.recovered)
        return results

    # Presence -----------------------------------------------------------------

    def _presence_join(self, conn: Connection, group: str) -> None:
        self._present.setdefault(conn, set()).add(group)
        info = _info(conn)
        self._spawn(self._quietly(self.backend.presence_add(group, conn.id, info)), "presence")
        self._spawn(self._presence_event(group, "join", info), "presence-event")

    def _presence_leave(self, conn: Connection, group: str) -> None:
        _discard(self._present, conn, group)
        info = _info(conn)
        self._spawn(self._quietly(self.backend.presence_remove(group, conn.id)), "presence")
        self._spawn(self._presence_event(group, "leave", info), "presence-event")

    def _presence_gone(self, members: list[tuple[str, str]]) -> None:
        """Members of a replica found dead were removed: tell the groups' watchers."""
        for group, info in members:
            self._spawn(self._presence_event(group, "leave", info), "presence-event")

    async def _presence_event(self, group: str, what: str, info: str) -> None:
        event = f'{{"tz":"presence","group":{dumps(group)},"{what}":{info}}}'
        await self._quietly(self.publish(Envelope("group", PRESENCE + group, event, self.id)))

    async def presence_count(self, group: str) -> int:
        """Members of ``group`` that joined with ``presence=True``, on every replica."""
        return await self.backend.presence_count(group)

    async def presence(
        self, group: str, cursor: int = 0, count: int = 100
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the group's present members (``id``, ``user``); the next cursor, 0: done."""
        infos, following = await self.backend.presence_list(group, cursor, count)
        return [json.loads(info) for info in infos], following

    async def _quietly(self, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except BroadcastUnavailable as exc:
            log.debug("broadcast: %s", exc)

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # Lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.backend.start(self._receive, self.resync, self._presence_gone)

    async def close(self) -> None:
        if self._started:
            self._started = False
            tasks = list(self._tasks)
            if tasks:  # presence removals of the last clients, bounded
                await asyncio.wait(tasks, timeout=BROADCAST_TIMEOUT)
            await self.backend.close()


def _discard(index: dict[Any, Any], key: Any, item: Any) -> None:
    """Take ``item`` out of ``index[key]`` (a set, or a dict by key), and ``key`` out of
    ``index`` once nothing is left under it."""
    entries = index.get(key)
    if entries is not None:
        if isinstance(entries, dict):
            entries.pop(item, None)
        else:
            entries.discard(item)
        if not entries:
            del index[key]


def _frame(envelope: Envelope, position: Position) -> str:
    """A group message as a v2 client gets it: the text with its group and position."""
    return dumps(
        {
            "tz": "msg",
            "group": envelope.target,
            "epoch": position.epoch,
            "offset": position.offset,
            "data": envelope.text,
        }
    )


def _position(seen: dict[str, Any]) -> Position | None:
    epoch, offset = seen.get("epoch"), seen.get("offset")
    if not isinstance(epoch, str) or not isinstance(offset, str):
        return None
    try:
        offset_key(offset)
    except ValueError:
        return None
    return Position(epoch, offset)


async def _result(joined: Joined) -> Recovery:
    return await joined


def _info(conn: Connection) -> str:
    return dumps({"id": conn.id, "user": _identity(conn.user)})


def _identity(user: Any) -> Any:
    """``conn.user`` as JSON gives it back (tickets and presence carry it)."""
    if user is None or isinstance(user, (str, int, bool)):
        return user
    try:
        return json.loads(dumps(user))
    except (TypeError, ValueError):
        return repr(user)


def _random_key() -> Callable[[], bytes]:
    key = secrets.token_bytes(32)
    return lambda: key


HUB = web.AppKey("tranzit.ws.hub", Hub)
