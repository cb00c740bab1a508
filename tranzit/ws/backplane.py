"""What carries group messages between replicas: the envelope and the backends.

A :class:`Backend` publishes an :class:`Envelope` to every other replica and
hands the ones it hears to the hub (``deliver``). :class:`LocalBackend` is
for one process (nowhere to carry anything);
:class:`~tranzit.ws.redis_backend.RedisBackend` uses Redis pub/sub.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from ..errors import TranzitError

__all__ = [
    "Backend",
    "BroadcastIncomplete",
    "BroadcastUnavailable",
    "Deliver",
    "Envelope",
    "LocalBackend",
]

Target = Literal["conn", "group", "all"]


class BroadcastUnavailable(TranzitError):
    """The broadcast backend (Redis) cannot be reached; local members were still served."""


class BroadcastIncomplete(BroadcastUnavailable):
    """Redis took the message but fewer replicas were listening than are known to exist."""


# What follows each of an envelope's four strings, as Envelope.dumps writes it.
_SEPARATORS = (", ", ", ", ", ", "]")
_DECODER = json.JSONDecoder()


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
        return cls(cast(Target, kind), target, body, origin)


Deliver = Callable[[Envelope], Awaitable[None]]


class Backend(Protocol):
    #: True while this replica can publish and hears what the others publish
    #: (``/readyz`` fails while it is False).
    @property
    def healthy(self) -> bool: ...

    async def start(self, deliver: Deliver) -> None: ...
    async def publish(self, envelope: Envelope) -> None: ...
    async def close(self) -> None: ...


class LocalBackend:
    """No other replicas: publishing has nothing more to do."""

    healthy = True

    async def start(self, deliver: Deliver) -> None:
        return None

    async def publish(self, envelope: Envelope) -> None:
        return None

    async def close(self) -> None:
        return None
