"""Redis pub/sub between replicas (``broadcast_url: redis://host:6379/0``).

Every hub publishes its envelopes on one channel and listens to it; each
replica delivers what it hears to its own local members. Redis pub/sub is
at-most-once, so this backend says when it cannot promise delivery rather
than hiding it (``docs/groups.md``):

- a publish takes at most ``timeout`` seconds, waiting for earlier ones
  included, or raises :class:`~tranzit.ws.backplane.BroadcastUnavailable`;
  while the link is known to be down it raises at once, without trying;
- each listening replica registers itself in ``<channel>:replicas``; a
  publish that Redis handed to fewer of them than are known raises
  :class:`~tranzit.ws.backplane.BroadcastIncomplete`;
- the listener is supervised: it drops (and counts) what it cannot decode,
  PINGs an idle link, and reconnects after any failure with a short backoff;
  once back it asks the hub to look up what its members missed (``resync``).

Group messages are also kept, per group, in the stream ``<channel>:h:<group>``
(capped by ``history_size`` and ``history_age``), whose ids are their
positions. One Lua script adds a message to its stream and publishes it, so
the order on the channel is the stream's order on every replica. Each
group's epoch (``<channel>:e:<group>``) is made when its history starts: a
Redis that restarted empty, or a history that expired, has a new one.
Presence (``<channel>:p:<group>``, a hash of member → JSON) is indexed per
replica (``<channel>:pi:<replica>``), so the members of a replica that
stopped refreshing its registry entry are removed by the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import TranzitError
from ..limits import BROADCAST_TIMEOUT, HISTORY_AGE, HISTORY_SIZE
from ..throttle import Throttle
from .backplane import (
    BroadcastIncomplete,
    BroadcastUnavailable,
    Deliver,
    Envelope,
    Gone,
    Position,
    Resync,
    Sync,
)

__all__ = ["RedisBackend"]

log = logging.getLogger("tranzit.ws")

T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[T], seconds: float) -> T:
        # wait_for runs its awaitable in a new task before 3.12: about 45 µs
        # per publish, a third of its cost; a timeout scope adds none.
        async with asyncio.timeout(seconds):
            return await awaitable

else:
    _within = asyncio.wait_for

#: Seconds after a publish timed out during which publishes fail without trying.
_FAIL_FAST = 1.0
#: Registry entries this much older than the expiry are deleted, not merely ignored.
_FORGET_AFTER = 12
#: Seconds a group's history and epoch outlive its last message.
HISTORY_TTL = 86400
#: Connections to Redis per replica (one listens; the others publish and look up).
POOL_SIZE = 64
#: A look-up (join point, replay, presence) may take this many times ``timeout``:
#: it waits its turn for a connection behind a burst of others, and nobody is
#: waiting on it the way a publisher is.
LOOKUP_FACTOR = 5

# Shared by both scripts: ids as pairs of numbers, and cutting a group's history.
# KEYS[1] is the stream, KEYS[2] the group's hash: e (epoch), c (the newest id cut
# from the stream: every message after c is still there).
_CUT = """
local function key(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local ams, aseq = key(a)
  local bms, bseq = key(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local function epoch_of(new_epoch, ttl)
  local epoch = redis.call('HGET', KEYS[2], 'e')
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', KEYS[2], 'e', epoch, 'c', '0-0')
  end
  redis.call('EXPIRE', KEYS[2], ttl)
  return epoch
end
-- Cut what is over size or older than age_ms (exactly), and remember the newest cut.
local function cut(size, age_ms, now_ms)
  local newest = nil
  local over = redis.call('XLEN', KEYS[1]) - size
  if over > 0 then
    local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)
    newest = old[#old][1]
  end
  local oldest_kept = string.format('%.0f-0', now_ms - age_ms)
  local aged = redis.call('XREVRANGE', KEYS[1], '(' .. oldest_kept, '-', 'COUNT', 1)
  if #aged > 0 and (newest == nil or before(newest, aged[1][1])) then newest = aged[1][1] end
  if newest then
    local ms, seq = key(newest)
    redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', ms, seq + 1))
    redis.call('HSET', KEYS[2], 'c', newest)
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Keeps a group message in its stream and publishes it, atomically: the channel's
# order is the stream's. ARGV: channel, envelope prefix, size, age (ms), a new epoch
# in case there is none, the text, ttl (s).
_PUBLISH = (
    _CUT
    + """
local epoch = epoch_of(ARGV[5], ARGV[7])
local id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[6])
cut(tonumber(ARGV[3]), tonumber(ARGV[4]), now_ms())
redis.call('EXPIRE', KEYS[1], ARGV[7])
local n = redis.call('PUBLISH', ARGV[1], ARGV[2] .. epoch .. '/' .. id .. '"]')
return {epoch, id, n}
"""
)

# A group's position now and, when asked, the messages after a position, or 0 when
# some of them are gone. ARGV: epoch asked ('' for none), offset asked, age (ms),
# most entries, a new epoch in case there is none, ttl (s), a marker to publish
# after reading ('' for none), the channel.
_SYNC = (
    _CUT
    + """
local epoch = epoch_of(ARGV[5], ARGV[6])
local top = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  cut(tonumber(ARGV[4]), tonumber(ARGV[3]), now_ms())
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then top = info[i + 1] end
  end
end
if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[7]) end
if ARGV[1] == '' then return {epoch, top, -1} end
local cut_at = redis.call('HGET', KEYS[2], 'c') or '0-0'
if ARGV[1] ~= epoch and cut_at == '0-0' then
  -- Another history, whole since it began: what it holds was all published after
  -- the position asked about (a gap all the same: the old one's end may be lost).
  return {epoch, top, 0, redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[4])}
end
if ARGV[1] ~= epoch or before(top, ARGV[2]) or before(ARGV[2], cut_at) then
  return {epoch, top, 0}
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[4])
return {epoch, top, 1, entries}
"""
)

# Removes the presence of a replica that stopped refreshing its registry entry.
# KEYS: registry, the replica's index. ARGV: its name, key prefix, cut-off score.
# Returns group, info, group, info, ... of the members removed.
_BURY = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) >= tonumber(ARGV[3]) then return {} end
local gone = {}
for _, item in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local group, member = string.match(item, '^(.*)\\n([^\\n]*)$')
  if group then
    local hash = ARGV[2] .. ':p:' .. group
    local info = redis.call('HGET', hash, member)
    if info then
      redis.call('HDEL', hash, member)
      table.insert(gone, group)
      table.insert(gone, info)
    end
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return gone
"""


def _field(fields: list[bytes], name: bytes) -> str:
    """The value of ``name`` in a stream entry's flat [field, value, ...] list."""
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == name:
            return fields[index + 1].decode()
    return ""


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class _LinkDown(Exception):
    """The pub/sub connection stopped answering (Redis hung or the network is gone)."""


class RedisBackend:
    """Redis pub/sub on ``channel``, with bounded publishes and a supervised listener.

    ``name`` identifies this replica in the registry (unique per process;
    generated when not given). ``ping_interval`` is how long the link may be
    idle before a PING, and how long the PING may take.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        channel: str = "tranzit:broadcast",
        timeout: float = BROADCAST_TIMEOUT,
        ping_interval: float = 1.0,
        replica_expiry: float = 5.0,
        min_backoff: float = 0.05,
        max_backoff: float = 1.0,
        history_size: int = HISTORY_SIZE,
        history_age: float = HISTORY_AGE,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            raise TranzitError(
                "broadcast_url is a Redis URL but the redis package is missing: "
                "pip install 'tranzit[redis]'"
            ) from None
        self.url = url
        self.name = name or secrets.token_hex(6)
        self.channel = channel
        #: The sorted set of listening replicas (member: name, score: Redis time).
        self.registry_key = f"{channel}:replicas"
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.replica_expiry = replica_expiry
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.history = history_size > 0
        self.marks = True
        self.history_size = history_size
        self.history_age = history_age
        #: This replica's presence entries, indexed so that others can remove them.
        self.presence_index = f"{channel}:pi:{self.name}"
        #: Messages on the channel that were not envelopes, dropped since start.
        self.dropped = 0
        #: Set while the listener is subscribed and its link answers.
        self.ready = asyncio.Event()
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._resync: Resync | None = None
        self._gone: Gone | None = None
        self._task: asyncio.Task[None] | None = None
        # Publishes go out one at a time, in call order (the lock is FIFO): over a
        # pool of connections, concurrent publishes could reach Redis reordered.
        self._publishing = asyncio.Lock()
        self._fail_fast_until = 0.0
        self._sent_at = math.inf  # when the publish Redis has not answered yet was sent
        self._others: frozenset[str] = frozenset()  # other replicas listening, per the registry
        # After our own outage Redis may have restarted and lost the registry:
        # the replicas known before it still count until this time.
        self._held: frozenset[str] = frozenset()
        self._held_until = 0.0
        self._refreshed_at = 0.0
        self._heard = 0.0  # when the listening connection last delivered anything
        self._outage = False
        self._drop_log = Throttle(10.0)
        self._error_log = Throttle(10.0)
        self._registry_log = Throttle(10.0)

    def _connect(self) -> Any:
        import redis.asyncio
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Every call is bounded by its own wait_for (a socket_timeout would
        # cost a task per command); retrying is the supervisor's job, so
        # redis-py does not retry on its own. A burst of look-ups (thousands of
        # clients resuming after a replica died) waits for a pooled connection
        # instead of failing with "Too many connections".
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self.url,
            max_connections=POOL_SIZE,
            timeout=None,
            socket_connect_timeout=self.timeout,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
        )
        return redis.asyncio.Redis.from_pool(pool)

    @property
    def healthy(self) -> bool:
        """True while subscribed, the link answers, and publishes are not timing out."""
        return self.ready.is_set() and time.monotonic() >= self._fail_fast_until

    @property
    def others(self) -> frozenset[str]:
        """The other replicas the registry says are listening (as of its last read, ≤ 1 s ago)."""
        return self._others

    async def start(
        self, deliver: Deliver, resync: Resync | None = None, gone: Gone | None = None
    ) -> None:
        """Start listening; waits (at most ``timeout``) for the first subscription.

        ``resync`` is called each time the listener is back after losing its
        link; ``gone`` with the presence entries of replicas found dead.
        """
        self._resync, self._gone = resync, gone
        self._client = self._connect()
        self._scripts = {
            name: self._client.register_script(source)
            for name, source in (("publish", _PUBLISH), ("sync", _SYNC), ("bury", _BURY))
        }
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(deliver), name="tranzit-redis-listener"
        )
        # So that a publish right after start-up reaches the others; a Redis
        # that is away must not stop the server from starting.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ready.wait(), self.timeout)

    # Publishing ------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> None:
        data = envelope.dumps()
        await self._bounded(lambda: self._client.publish(self.channel, data))

    async def publish_group(self, envelope: Envelope) -> Position | None:
        """Keep the message in its group's stream and publish it (with its position)."""
        if not self.history:
            await self.publish(envelope)
            return None
        group = envelope.target
        args = [
            self.channel,
            envelope.prefix(),
            self.history_size,
            round(self.history_age * 1000),
            secrets.token_hex(4),
            envelope.text,
            max(HISTORY_TTL, round(2 * self.history_age)),
        ]
        answer: list[Any] = []

        async def send() -> int:
            script = self._scripts["publish"]
            answer[:] = await script(keys=self._group_keys(group), args=args)
            return int(answer[2])

        # Kept in history: a replica that did not hear it catches up once back, and its
        # clients resume elsewhere, so fewer receivers than replicas is no failure here.
        await self._bounded(send, check_reach=False)
        return Position(answer[0].decode(), answer[1].decode())

    def _group_keys(self, group: str) -> list[str]:
        return [f"{self.channel}:h:{group}", f"{self.channel}:e:{group}"]

    async def _bounded(
        self, send: Callable[[], Awaitable[int]], *, check_reach: bool = True
    ) -> None:
        """Run one publish in call order, bounded by ``timeout`` (queueing included)."""
        import redis

        if self._client is None:
            raise BroadcastUnavailable("the Redis broadcast backend is not started")
        if not self.healthy:
            raise self._unavailable("the link is down")
        try:
            # One bound for the whole call: waiting behind a hung publish counts.
            await _within(self._publish_in_order(send, check_reach), self.timeout)
        except asyncio.TimeoutError:
            # Only a Redis that sits on a command means the link is down; a
            # long queue of this replica's own publishes does not.
            stalled = time.monotonic() - self._sent_at >= self.timeout / 2
            if not stalled:
                raise self._unavailable(
                    f"still queued behind earlier publishes after {self.timeout:g} s"
                ) from None
            self._fail_fast_until = time.monotonic() + _FAIL_FAST
            raise self._unavailable(
                f"no answer within {self.timeout:g} s", maybe_sent=True
            ) from None
        except (redis.RedisError, OSError) as exc:
            timed_out = isinstance(exc, redis.TimeoutError)
            if timed_out:
                self._fail_fast_until = time.monotonic() + _FAIL_FAST
            raise self._unavailable(str(exc), maybe_sent=timed_out) from None

    async def _publish_in_order(
        self, send: Callable[[], Awaitable[int]], check_reach: bool = True
    ) -> None:
        async with self._publishing:
            if not self.healthy:  # a publish ahead of this one timed out
                raise self._unavailable("the link is down")
            self._sent_at = sent_at = time.monotonic()
            receivers = await send()
            self._sent_at = math.inf  # answered: nothing is outstanding
        if check_reach:
            await self._check_reach(receivers, sent_at)

    def _unavailable(self, reason: str, *, maybe_sent: bool = False) -> BroadcastUnavailable:
        return BroadcastUnavailable(
            f"cannot publish to {_redacted(self.url)}: {reason}; "
            "other replicas may have missed it (this replica's members got it)",
            maybe_sent=maybe_sent,
        )

    # History and presence ----------------------------------------------------

    def top_now(self, group: str) -> Position | None:
        return None  # only Redis knows: see sync()

    async def sync(self, group: str, since: Position | None, marker: str = "") -> Sync:
        """The group's position and, with ``since``, what came after it (one script, atomic).

        ``marker`` is published on the channel right after the read: the listener
        hears it after every message the answer accounts for.
        """
        args = [
            since.epoch if since is not None else "",
            since.offset if since is not None else "",
            round(self.history_age * 1000),
            self.history_size,
            secrets.token_hex(4),
            max(HISTORY_TTL, round(2 * self.history_age)),
            marker,
            self.channel,
        ]
        answer = await self._command(self._scripts["sync"](keys=self._group_keys(group), args=args))
        epoch = answer[0].decode()
        top = Position(epoch, answer[1].decode())
        if answer[2] == -1:
            return Sync(top, None)
        if answer[2] == 0 and len(answer) < 4:
            return Sync(top, False)
        # Entries come from the script as [id, [field, value, ...]]; the text is field "d".
        entries = tuple(
            (Position(epoch, entry_id.decode()), _field(fields, b"d"))
            for entry_id, fields in answer[3]
        )
        return Sync(top, answer[2] == 1, entries)

    async def presence_add(self, group: str, member: str, info: str) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(f"{self.channel}:p:{group}", member, info)
            pipe.sadd(self.presence_index, f"{group}\n{member}")
            await self._command(pipe.execute())

    async def presence_remove(self, group: str, member: str) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hdel(f"{self.channel}:p:{group}", member)
            pipe.srem(self.presence_index, f"{group}\n{member}")
            await self._command(pipe.execute())

    async def presence_count(self, group: str) -> int:
        return int(await self._command(self._client.hlen(f"{self.channel}:p:{group}")))

    async def presence_list(self, group: str, cursor: int, count: int) -> tuple[list[str], int]:
        following, found = await self._command(
            self._client.hscan(f"{self.channel}:p:{group}", cursor, count=count)
        )
        return [v.decode() for v in found.values()], int(following)

    async def _command(self, awaitable: Awaitable[T]) -> T:
        """One command, bounded by ``timeout``; BroadcastUnavailable when Redis is away."""
        import redis

        if self._client is None:
            raise BroadcastUnavailable("the Redis broadcast backend is not started")
        bound = self.timeout * LOOKUP_FACTOR
        try:
            return await _within(awaitable, bound)
        except asyncio.TimeoutError:
            raise self._unavailable(f"no answer within {bound:g} s") from None
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(str(exc)) from None

    async def _bury_dead(self, now: float) -> None:
        """Remove the presence of replicas whose registry entry went stale (any replica may)."""
        cutoff = now - self.replica_expiry
        dead = await self._client.zrangebyscore(self.registry_key, "-inf", cutoff)
        for name in dead:
            name = name.decode()
            if name == self.name:
                continue
            gone = await self._scripts["bury"](
                keys=[self.registry_key, f"{self.channel}:pi:{name}"],
                args=[name, self.channel, cutoff],
            )
            if gone and self._gone is not None:
                pairs = [
                    (g.decode(), i.decode()) for g, i in zip(gone[::2], gone[1::2], strict=True)
                ]
                log.info("broadcast: replica %s is gone; removed %d member(s)", name, len(pairs))
                self._gone(pairs)

    def _known_others(self) -> frozenset[str]:
        if self._held and time.monotonic() < self._held_until:
            return self._others | self._held
        return self._others

    async def _check_reach(self, receivers: int, sent_at: float) -> None:
        # Our own listener is one of the receivers (publish fails fast otherwise).
        reached = receivers - 1
        if reached >= len(self._known_others()):
            return
        # The cache is up to a second old: a replica that has since left
        # cleanly is gone from the registry, so look again before complaining
        # (unless the registry was read after this publish went out).
        if self._refreshed_at < sent_at:
            await self._refresh_registry(register=False)
        known = len(self._known_others())
        if reached < known:
            raise BroadcastIncomplete(
                f"published to {_redacted(self.url)}, but delivered to this replica and "
                f"{max(reached, 0)} of {known} other replicas (the others are not listening)"
            )

    # The replica registry ----------------------------------------------------

    async def _refresh_registry(self, *, register: bool) -> None:
        """Register this replica (when listening) and read which others are."""
        self._refreshed_at = time.monotonic()
        # Redis's clock, not ours: the replicas' clocks need not agree.
        seconds, micros = await self._client.time()
        now = seconds + micros / 1e6
        async with self._client.pipeline(transaction=False) as pipe:
            if register:
                pipe.zadd(self.registry_key, {self.name: now})
            pipe.zremrangebyscore(
                self.registry_key, "-inf", now - _FORGET_AFTER * self.replica_expiry
            )
            pipe.zrangebyscore(self.registry_key, now - self.replica_expiry, "+inf")
            listening = (await pipe.execute())[-1]
        self._others = frozenset(m.decode() for m in listening) - {self.name}
        if register:
            await self._bury_dead(now)
        # One seen again is counted as any other: if it now leaves, it is gone.
        self._held -= self._others

    async def _register(self) -> None:
        import redis

        try:
            await asyncio.wait_for(self._refresh_registry(register=True), self.timeout)
        except redis.ResponseError as exc:
            # Refused (an ACL without ZADD, a key of another type): the others
            # will not count us, which costs their BroadcastIncomplete, not delivery.
            if self._registry_log.due():
                log.warning("broadcast: cannot update %s: %s", self.registry_key, exc)

    async def _keep_registered(self, stopped: asyncio.Event) -> None:
        import redis

        # Not `while True`: redis-py may turn the cancellation of a command into a
        # ConnectionError, which is suppressed below; the loop would then never end.
        while not stopped.is_set():
            await asyncio.sleep(self.ping_interval)
            # A link that fails here is the watchdog's to notice (its PING).
            with contextlib.suppress(
                redis.ConnectionError, redis.TimeoutError, OSError, asyncio.TimeoutError
            ):
                await self._register()

    # Listening -------------------------------------------------------------

    async def _supervise(self, deliver: Deliver) -> None:
        """Run the listener forever: any end of it is logged and followed by a restart."""
        import redis

        backoff = self.min_backoff
        while True:
            started = time.monotonic()
            try:
                await self._listen(deliver)  # returns only by raising; restarted anyway
            except (redis.RedisError, OSError, asyncio.TimeoutError, _LinkDown) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if not self._outage:
                    self._outage = True
                    log.warning(
                        "broadcast: lost %s (%s); reconnecting", _redacted(self.url), reason
                    )
                await self._drop_idle_connections()
            except Exception as exc:
                # A bug (ours, or in a deliver callback): say so, then carry on.
                if self._error_log.due():
                    log.error(
                        "broadcast: the listener failed (%s: %s); restarting it",
                        type(exc).__name__,
                        exc,
                    )
            if time.monotonic() - started > self.max_backoff:
                backoff = self.min_backoff  # it had been up: this is a new failure
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.max_backoff)

    async def _drop_idle_connections(self) -> None:
        # A restarted Redis closed every pooled connection: without this, the
        # first command after it is back would fail on one of them.
        import redis

        pool = self._client.connection_pool
        with contextlib.suppress(redis.RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(pool.disconnect(inuse_connections=False), self.timeout)

    async def _listen(self, deliver: Deliver) -> None:
        import redis

        pubsub = self._client.pubsub()
        tasks: list[asyncio.Task[None]] = []
        stopped = asyncio.Event()
        try:
            await asyncio.wait_for(self._subscribe(pubsub), self.timeout)
            if self._outage:
                # Redis may have restarted empty: keep counting the replicas
                # we knew until they had time to register again.
                self._held = self._known_others()
                self._held_until = time.monotonic() + self.replica_expiry
            await self._register()
            back = self._outage
            if self._outage:
                self._outage = False
                log.info("broadcast: reconnected to %s", _redacted(self.url))
            self._heard = time.monotonic()
            self.ready.set()
            if back and self._resync is not None:
                self._resync()  # what was published meanwhile: the hub looks it up
            # Reading blocks without a timeout (no per-message cost); the
            # watchdog beside it is what notices a silent link.
            loop = asyncio.get_running_loop()
            tasks = [
                loop.create_task(self._receive(pubsub, deliver), name="broadcast-receive"),
                loop.create_task(self._watch(pubsub), name="broadcast-watchdog"),
                loop.create_task(self._keep_registered(stopped), name="broadcast-registry"),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            done.pop().result()  # each runs until it fails: re-raise for the supervisor
        finally:
            self.ready.clear()
            stopped.set()
            for task in tasks:
                task.cancel()
            if tasks:
                # Bounded: a task that does not end when cancelled (a client library
                # swallowing the cancellation) must not keep the supervisor from
                # reconnecting; it is left behind, and said so.
                _, stuck = await asyncio.wait(tasks, timeout=self.timeout)
                for task in stuck:
                    log.warning("broadcast: %s did not stop when cancelled", task.get_name())
                for task in tasks:  # retrieved: the supervisor reports the first failure
                    if task.done() and not task.cancelled():
                        task.exception()
            with contextlib.suppress(redis.RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(pubsub.aclose(), self.timeout)

    async def _subscribe(self, pubsub: Any) -> None:
        await pubsub.subscribe(self.channel)
        # Listening only once Redis confirmed the subscription: before that, a
        # message published elsewhere would not reach us.
        while True:
            message = await pubsub.get_message(timeout=self.timeout)
            if message is not None and message["type"] == "subscribe":
                return

    async def _receive(self, pubsub: Any, deliver: Deliver) -> None:
        async for message in pubsub.listen():
            self._heard = time.monotonic()
            if message["type"] == "message":
                envelope = self._decode(message["data"])
                if envelope is not None:
                    await deliver(envelope)
        raise _LinkDown("the subscription ended")

    async def _watch(self, pubsub: Any) -> None:
        """PING a link that has been silent for ``ping_interval``; raise if it stays silent."""
        pinged = 0.0
        while True:
            await asyncio.sleep(self.ping_interval / 4)
            now = time.monotonic()
            silent = now - self._heard
            if silent > 2 * self.ping_interval:
                raise _LinkDown(f"no answer to PING within {self.ping_interval:g} s")
            if silent > self.ping_interval and now - pinged > self.ping_interval:
                pinged = now
                # The answer arrives through _receive; sending is bounded too.
                await asyncio.wait_for(pubsub.ping(), self.ping_interval)

    def _decode(self, data: bytes) -> Envelope | None:
        try:
            return Envelope.loads(data)
        except ValueError as exc:
            self.dropped += 1
            if self._drop_log.due():
                log.warning(
                    "broadcast: dropped a message on %s that is not an envelope (%s); "
                    "%d dropped so far",
                    self.channel,
                    exc,
                    self.dropped,
                )
            return None

    async def close(self) -> None:
        import redis

        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            # Leave the registry at once, so the others do not count us as missing.
            with contextlib.suppress(redis.RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._client.zrem(self.registry_key, self.name), self.timeout
                )
            await self._client.aclose()
            self._client = None
        self.ready.clear()
