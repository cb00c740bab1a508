"""Redis pub/sub between replicas (``broadcast_url: redis://host:6379/0``).

Every hub publishes its envelopes on one channel and listens to it; each
replica delivers what it hears to its own local members. Redis pub/sub is
at-most-once: a replica that has lost Redis misses what others publish until
it is back. Publishing while Redis is away raises
:class:`~tranzit.ws.hub.BroadcastUnavailable` at once (nothing is queued),
after the local members got the message; the listener reconnects with
exponential backoff (0.1 s doubling to 5 s, with jitter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .backplane import BroadcastUnavailable, Deliver, Envelope

__all__ = ["RedisBackend"]

log = logging.getLogger("tranzit.ws")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class RedisBackend:
    def __init__(
        self,
        url: str,
        *,
        channel: str = "tranzit:broadcast",
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            from ..errors import TranzitError

            raise TranzitError(
                "broadcast_url is a Redis URL but the redis package is missing: "
                "pip install 'tranzit[redis]'"
            ) from None
        self.url = url
        self.channel = channel
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        #: Set while the listener is subscribed (tests and health checks wait on it).
        self.ready = asyncio.Event()
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        # Publishes go out one at a time, in call order (the lock is FIFO): over a
        # pool of connections, concurrent publishes could reach Redis reordered.
        self._publishing = asyncio.Lock()

    def _connect(self) -> Any:
        import redis.asyncio
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Fail fast: a publish while Redis is away must not hang the caller.
        return redis.asyncio.Redis.from_url(
            self.url,
            socket_connect_timeout=1.0,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=10,
        )

    @property
    def healthy(self) -> bool:
        return self.ready.is_set()

    async def start(self, deliver: Deliver) -> None:
        self._client = self._connect()
        self._task = asyncio.get_running_loop().create_task(
            self._listen(deliver), name="tranzit-redis-listener"
        )

    async def publish(self, envelope: Envelope) -> None:
        import redis

        if self._client is None:
            raise BroadcastUnavailable("the Redis broadcast backend is not started")
        try:
            async with self._publishing:
                await self._client.publish(self.channel, envelope.dumps())
        except (redis.RedisError, OSError) as exc:
            raise BroadcastUnavailable(
                f"cannot publish to {_redacted(self.url)}: {exc}; delivered to this replica only"
            ) from None

    async def _listen(self, deliver: Deliver) -> None:
        import redis

        backoff = self.min_backoff
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "subscribe":
                        # Ready only once Redis confirmed the subscription: before
                        # that, a message published elsewhere would not reach us.
                        if backoff > self.min_backoff:
                            log.info("broadcast: reconnected to %s", _redacted(self.url))
                        backoff = self.min_backoff
                        self.ready.set()
                        continue
                    if kind != "message":
                        continue
                    try:
                        envelope = Envelope.loads(message["data"])
                    except (ValueError, TypeError) as exc:
                        log.warning("broadcast: ignored a malformed message: %s", exc)
                        continue
                    await deliver(envelope)
            except (redis.RedisError, OSError) as exc:
                self.ready.clear()
                log.warning(
                    "broadcast: lost %s (%s); retrying in %.1f s",
                    _redacted(self.url),
                    exc,
                    backoff,
                )
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.max_backoff)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.ready.clear()
