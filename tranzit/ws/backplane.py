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
from typing import Literal, Protocol

from ..errors import TranzitError

__all__ = [
    "Backend",
    "BroadcastUnavailable",
    "Deliver",
    "Envelope",
    "LocalBackend",
]

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
