"""What carries group messages between replicas: the envelope, positions, the backends.

A :class:`Backend` publishes an :class:`Envelope` to every other replica and
hands the ones it hears to the hub (``deliver``). A group message is also
kept in its group's capped history and gets a :class:`Position` there, so a
client that reconnects can be sent what it missed (:meth:`Backend.sync`).
:class:`LocalBackend` is for one process (history in memory);
:class:`~tranzit.ws.redis_backend.RedisBackend` uses Redis pub/sub for live
messages and one Redis stream per group for history.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, cast

from ..errors import TranzitError
from ..limits import HISTORY_AGE, HISTORY_SIZE

__all__ = [
    "Backend",
    "BroadcastIncomplete",
    "BroadcastUnavailable",
    "Deliver",
    "Envelope",
    "Gone",
    "LocalBackend",
    "Position",
    "Sync",
]

Target = Literal["conn", "group", "all"]


class BroadcastUnavailable(TranzitError):
    """The broadcast backend (Redis) cannot be reached; local members were still served.

    ``maybe_sent``: the command went out and got no answer in time, so Redis may
    still carry it out (a hung Redis); False when it surely never ran.
    """

    def __init__(self, message: str, *, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class BroadcastIncomplete(BroadcastUnavailable):
    """Redis took the message but fewer replicas were listening than are known to exist."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a group message is in its group's history: ``epoch`` and ``offset``.

    ``offset`` is a Redis stream id, ``"<ms>-<seq>"`` (the in-process backend
    makes the same shape); offsets compare as that pair of integers, and only
    within one ``epoch``, which changes whenever the history was lost.
    """

    epoch: str
    offset: str

    @property
    def key(self) -> tuple[int, int]:
        return offset_key(self.offset)

    def after(self, other: Position) -> bool:
        """Whether this message comes after ``other`` in the same history."""
        return self.epoch == other.epoch and self.key > other.key

    def as_dict(self) -> dict[str, str]:
        return {"epoch": self.epoch, "offset": self.offset}


def offset_key(offset: str) -> tuple[int, int]:
    """``"1733150000000-3"`` as ``(1733150000000, 3)``; ValueError for anything else."""
    ms, dash, seq = offset.partition("-")
    if not (ms.isdigit() and (not dash or seq.isdigit())) or len(offset) > 41:
        raise ValueError(f"expected an offset like '1733150000000-0', found {offset[:44]!r}")
    return int(ms), int(seq or 0)


class Sync(NamedTuple):
    """A group's history as :meth:`Backend.sync` found it.

    ``top``: the group's position now (the join point: every later message
    comes after it). ``recovered``: None when no position was asked about;
    True when ``entries`` are all the messages after it (in order); False
    when some are gone (outside the window, or another epoch). With False,
    ``entries`` may hold a new epoch's whole history (all published after
    the position asked about, though not all that was).
    """

    top: Position
    recovered: bool | None
    entries: tuple[tuple[Position, str], ...] = ()


# What follows each of an envelope's four strings, as Envelope.dumps writes it.
_SEPARATORS = (", ", ", ", ", ", "]")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Envelope:
    """One published message: who it is for, what it says, which hub sent it.

    A group message kept in history carries its ``position``. On the wire it
    rides in the origin string (``hub/epoch/offset``), so the four-string form
    stays what replicas before positions read: they deliver it as before.
    """

    kind: Target
    target: str
    text: str
    origin: str
    position: Position | None = field(default=None, compare=True)

    def dumps(self) -> str:
        origin, position = self.origin, self.position
        if position is not None:
            origin = f"{origin}/{position.epoch}/{position.offset}"
        return json.dumps([self.kind, self.target, self.text, origin], ensure_ascii=False)

    def prefix(self) -> str:
        """The wire form up to where a position goes (the backend appends it and ``"]``)."""
        return self.dumps()[:-2] + "/"

    @classmethod
    def loads(cls, data: str | bytes) -> Envelope:
        """The envelope in ``data`` (as :meth:`dumps` wrote it); ValueError for anything else.

        Read as four JSON strings in a row (json decodes each one from its
        opening quote, so it cannot be an array), so hostile input costs time
        linear in its size and never nests: ``[[[[…`` is rejected at its
        second character, never recursed into.
        """
        text = data.decode() if isinstance(data, bytes) else data
        values: list[str] = []
        pos = 1
        if text.startswith("["):
            for separator in _SEPARATORS:
                if not text.startswith('"', pos):
                    break
                value, pos = _DECODER.raw_decode(text, pos)
                if not text.startswith(separator, pos):
                    break
                values.append(value)
                pos += len(separator)
        if len(values) != 4 or pos != len(text):
            raise ValueError(
                f"expected a JSON array of 4 strings, got {text[:24]!r} ({len(text)} characters)"
            )
        kind, target, body, origin = values
        if kind not in ("conn", "group", "all"):
            raise ValueError(f"unknown envelope kind {kind!r}")
        position = None
        if origin.count("/") == 2:
            origin, epoch, offset = origin.split("/")
            offset_key(offset)
            position = Position(epoch, offset)
        return cls(cast(Target, kind), target, body, origin, position)


Deliver = Callable[[Envelope], Awaitable[None]]
#: Called once the backend is back after an outage: what was missed meanwhile must be looked up.
Resync = Callable[[], None]
#: Called with (group, member info) for the members of a replica found dead.
Gone = Callable[[list[tuple[str, str]]], None]


class Backend(Protocol):
    #: True while this replica can publish and hears what the others publish
    #: (``/readyz`` fails while it is False).
    @property
    def healthy(self) -> bool: ...

    #: Whether group messages get positions (there is history to recover from).
    history: bool
    #: Whether live messages arrive apart from :meth:`sync`'s answer, so that ``sync``
    #: publishes ``marker`` on the channel to say when they have caught up.
    marks: bool

    async def start(
        self, deliver: Deliver, resync: Resync | None = None, gone: Gone | None = None
    ) -> None: ...

    async def publish(self, envelope: Envelope) -> None:
        """Carry ``envelope`` to the other replicas (this one delivered it already)."""

    async def publish_group(self, envelope: Envelope) -> Position | None:
        """Keep a group message in history and deliver it to every replica, this one too.

        Returns its position (None: no history kept, and then it was carried like
        :meth:`publish`: this replica delivers it itself).
        """

    async def sync(self, group: str, since: Position | None, marker: str = "") -> Sync:
        """The group's position now and, with ``since``, the messages after it.

        ``marker`` (when :attr:`marks`): an envelope to publish right after reading.
        """

    def top_now(self, group: str) -> Position | None:
        """The group's position if known without waiting (in-process history), else None."""

    async def presence_add(self, group: str, member: str, info: str) -> None: ...
    async def presence_remove(self, group: str, member: str) -> None: ...
    async def presence_count(self, group: str) -> int: ...
    async def presence_list(self, group: str, cursor: int, count: int) -> tuple[list[str], int]: ...
    async def close(self) -> None: ...


class _Ring:
    """One group's in-memory history: at most ``size`` messages younger than ``age`` seconds."""

    __slots__ = ("deleted", "entries", "last")

    def __init__(self, size: int) -> None:
        self.entries: deque[tuple[float, Position, str]] = deque()
        #: The offset of the newest message dropped from it (nothing after it was).
        self.deleted = (0, 0)
        self.last = (0, 0)


class LocalBackend:
    """No other replicas: live messages need carrying nowhere; history is kept in memory."""

    healthy = True
    marks = False

    def __init__(
        self, *, history_size: int = HISTORY_SIZE, history_age: float = HISTORY_AGE
    ) -> None:
        self.history = history_size > 0
        self.history_size = history_size
        self.history_age = history_age
        #: A new one per process: positions from before a restart are another history.
        self.epoch = secrets.token_hex(4)
        self._rings: dict[str, _Ring] = {}
        self._presence: dict[str, dict[str, str]] = {}
        self._deliver: Deliver | None = None

    async def start(
        self, deliver: Deliver, resync: Resync | None = None, gone: Gone | None = None
    ) -> None:
        self._deliver = deliver

    async def publish(self, envelope: Envelope) -> None:
        return None

    async def publish_group(self, envelope: Envelope) -> Position | None:
        if not self.history:
            return None
        ring = self._ring(envelope.target)
        now = time.time()
        ms, seq = int(now * 1000), 0
        if ms <= ring.last[0]:  # the same millisecond (or the clock went back)
            ms, seq = ring.last[0], ring.last[1] + 1
        ring.last = (ms, seq)
        position = Position(self.epoch, f"{ms}-{seq}")
        ring.entries.append((now, position, envelope.text))
        if len(ring.entries) > self.history_size:
            ring.deleted = ring.entries.popleft()[1].key
        self._expire(ring, now)
        if self._deliver is not None:
            await self._deliver(_positioned(envelope, position))
        return position

    def _ring(self, group: str) -> _Ring:
        ring = self._rings.get(group)
        if ring is None:
            ring = self._rings[group] = _Ring(self.history_size)
        return ring

    def _expire(self, ring: _Ring, now: float) -> None:
        entries = ring.entries
        while entries and entries[0][0] < now - self.history_age:
            ring.deleted = entries.popleft()[1].key

    def top_now(self, group: str) -> Position | None:
        ring = self._rings.get(group)
        last = ring.last if ring is not None else (0, 0)
        return Position(self.epoch, f"{last[0]}-{last[1]}")

    async def sync(self, group: str, since: Position | None, marker: str = "") -> Sync:
        ring = self._ring(group)
        self._expire(ring, time.time())
        top = Position(self.epoch, f"{ring.last[0]}-{ring.last[1]}")
        if since is None:
            return Sync(top, None)
        if since.epoch != self.epoch or since.key < ring.deleted or since.key > ring.last:
            return Sync(top, False)
        key = since.key
        entries = tuple((p, text) for _, p, text in ring.entries if p.key > key)
        return Sync(top, True, entries)

    async def presence_add(self, group: str, member: str, info: str) -> None:
        self._presence.setdefault(group, {})[member] = info

    async def presence_remove(self, group: str, member: str) -> None:
        members = self._presence.get(group)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._presence[group]

    async def presence_count(self, group: str) -> int:
        return len(self._presence.get(group, ()))

    async def presence_list(self, group: str, cursor: int, count: int) -> tuple[list[str], int]:
        infos = list(self._presence.get(group, {}).values())
        page = infos[cursor : cursor + count]
        following = cursor + count
        return page, following if following < len(infos) else 0

    async def close(self) -> None:
        self._deliver = None


def _positioned(envelope: Envelope, position: Position) -> Envelope:
    return Envelope(envelope.kind, envelope.target, envelope.text, envelope.origin, position)
