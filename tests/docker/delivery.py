"""Clients of the delivery-across-faults test: wire protocol v2 from the outside.

``V2Client`` is written from the protocol's description, not from tranzit's
code or tz.js: it asks for the subprotocol ``tranzit.2``, keeps a position and
a ticket per group (``joined`` and ``msg`` frames), reconnects on close (with
jitter after a 1001 "reconnect", with backoff otherwise), sends ``tz.resume``
first on every new connection, drops what it already has (by position) and
records what it delivered and every gap it was told of. ``Publisher`` says
numbered messages at a steady rate through the chat's ``say`` rule;
``phase_verdicts`` compares what each client delivered with what was said.
``ChatPage`` is the template's own page in Chromium (tz.js), read through a
script that subscribes to what the page receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

SUBPROTOCOL = "tranzit.2"
CALL_TIMEOUT = 10.0
# The most an upgrade through nginx may take: longer means nginx is waiting on an
# address that is gone (a killed replica), and a new attempt picks another one.
CONNECT_TIMEOUT = 10.0


def offset_key(offset: str) -> tuple[int, int]:
    """A stream offset ``"<ms>-<seq>"`` as the pair it is ordered by."""
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


def group_of(room: str) -> str:
    """The hub group of a chat room (the template's rules.py)."""
    return f"chat:{room}"


@dataclass(frozen=True)
class Delivered:
    """One chat message a client handed on, with the position it came with (if any)."""

    by: str
    text: str
    epoch: str | None
    offset: str | None
    at: float


@dataclass(frozen=True)
class Gap:
    """The client was told (or saw) that it may have missed messages of ``group``."""

    group: str
    why: str  # "recovered:false", "epoch changed", "refused"
    index: int  # how many messages of the group it had delivered by then
    at: float


@dataclass
class Position:
    epoch: str
    offset: str


@dataclass
class Reconnect:
    """One lost connection: when it closed, why, and when the new one was recovered."""

    closed_at: float
    code: int | None
    reason: str
    connected_at: float | None = None
    recovered_at: float | None = None
    results: dict[str, Any] = field(default_factory=dict)  # tz.resume's, per group


class CallFailed(Exception):
    """A call got an error reply, or its connection went away first."""


class V2Client:
    """A logged-in chat client on protocol v2 that reconnects and resumes by itself."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        name: str,
        rooms: Iterable[str],
        *,
        jitter: float,
    ) -> None:
        self.session = session
        self.url = url
        self.headers = headers
        self.name = name
        self.rooms = list(rooms)
        self.jitter = jitter  # the most a 1001 "reconnect" waits before reconnecting
        self.positions: dict[str, Position] = {}
        self.tickets: dict[str, str] = {}
        self.delivered: dict[str, list[Delivered]] = {group_of(r): [] for r in self.rooms}
        self.gaps: list[Gap] = []
        self.recoveries: list[dict[str, Any]] = []  # the recovery frames, as received
        self.reconnects: list[Reconnect] = []
        self.connects: list[float] = []  # when each connection opened
        self.duplicates = 0  # msg frames dropped because their position was not new
        self.pushes: list[str] = []  # text pushes that are not chat messages (chat_warning|…)
        self.host = ""  # the ws replica of the current connection (the join reply)
        self.problems: list[str] = []  # protocol breaches seen (not faults: those are expected)
        self.ready = asyncio.Event()  # connected, joined or resumed
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 1
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

    async def call(self, rule: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """A JSON call on the current connection: its result, or CallFailed."""
        ws = self._ws
        if ws is None or ws.closed:
            raise CallFailed(f"{self.name}: not connected")
        call_id = self._next_id
        self._next_id += 1
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = reply
        try:
            await ws.send_str(json.dumps({"rule": rule, "args": list(args), "id": call_id}))
            return await asyncio.wait_for(reply, timeout)
        except (ConnectionError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CallFailed(f"{self.name}: {rule} got no reply ({exc!r})") from exc
        finally:
            self._calls.pop(call_id, None)

    # -- the connection loop ------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        lost: Reconnect | None = None
        while True:
            try:
                ws = await asyncio.wait_for(
                    self.session.ws_connect(
                        self.url,
                        protocols=(SUBPROTOCOL,),
                        headers=self.headers,
                        heartbeat=None,
                        timeout=aiohttp.ClientWSTimeout(ws_close=3),
                    ),
                    CONNECT_TIMEOUT,
                )
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                attempt += 1
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1))
                continue
            attempt = 0
            self.connects.append(time.monotonic())
            if lost is not None:
                lost.connected_at = self.connects[-1]
            if ws.protocol != SUBPROTOCOL:
                self.problems.append(f"subprotocol {ws.protocol!r} selected, not {SUBPROTOCOL}")
            self._ws = ws
            reader = asyncio.get_running_loop().create_task(self._read(ws))
            # If the connection goes away while joining, the reader has seen why.
            with contextlib.suppress(CallFailed):
                await self._enter(lost)
            code, reason = await reader
            self.ready.clear()
            self._ws = None
            for reply in self._calls.values():
                if not reply.done():
                    reply.set_exception(CallFailed(f"{self.name}: connection closed ({code})"))
            lost = Reconnect(time.monotonic(), code, reason)
            self.reconnects.append(lost)
            if code == 1001 and reason == "reconnect":
                await asyncio.sleep(random.uniform(0, self.jitter))
            else:
                await asyncio.sleep(random.uniform(0.05, 0.25))

    async def _enter(self, lost: Reconnect | None) -> None:
        """Join the rooms (first connection) or resume them (every later one)."""
        if lost is None or not self.tickets:
            for room in self.rooms:
                self.host = str(await self.call("join", room)).split(",")[2]
            self.ready.set()
            return
        since = {
            group: {"epoch": pos.epoch, "offset": pos.offset, "ticket": self.tickets[group]}
            for group, pos in self.positions.items()
        }
        result = await self.call("tz.resume", since)
        lost.results = dict(result)
        for room in self.rooms:
            group = group_of(room)
            if result.get(group) == "refused":
                self._gap(group, "refused")
            # Also tells which replica this is; a joined group is not joined again.
            self.host = str(await self.call("join", room)).split(",")[2]
        lost.recovered_at = time.monotonic()
        self.ready.set()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> tuple[int | None, str]:
        reason = ""
        try:
            while True:
                message = await ws.receive()
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._on_text(message.data)
                elif message.type == aiohttp.WSMsgType.CLOSE:
                    reason = message.extra or ""
                    break
                elif message.type in {
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                }:
                    break
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
        return ws.close_code, reason

    # -- frames -------------------------------------------------------------

    def _on_text(self, text: str) -> None:
        if not text.startswith("{"):
            self._on_data(text, None, None, None)
            return
        frame = json.loads(text)
        kind = frame.get("tz")
        if kind == "msg":
            self._on_msg(frame)
        elif kind == "joined":
            self.positions[frame["group"]] = Position(frame["epoch"], frame["offset"])
            self.tickets[frame["group"]] = frame["ticket"]
        elif kind == "recovery":
            self._on_recovery(frame)
        elif kind == "left":
            self.positions.pop(frame["group"], None)
        elif kind is None and "id" in frame:
            reply = self._calls.get(frame["id"])
            if reply is not None and not reply.done():
                if "error" in frame:
                    reply.set_exception(CallFailed(f"{self.name}: {frame['error']}"))
                else:
                    reply.set_result(frame.get("result"))

    def _on_msg(self, frame: dict[str, Any]) -> None:
        group, epoch, offset = frame["group"], frame["epoch"], frame["offset"]
        pos = self.positions.get(group)
        if pos is None:
            self.problems.append(f"msg for {group} before its joined frame")
        elif epoch == pos.epoch and offset_key(offset) <= offset_key(pos.offset):
            self.duplicates += 1
            return
        elif epoch != pos.epoch:
            # History was lost (Redis restarted empty) and no recovery frame said so.
            self._gap(group, "epoch changed")
        self.positions[group] = Position(epoch, offset)
        self._on_data(frame["data"], group, epoch, offset)

    def _on_recovery(self, frame: dict[str, Any]) -> None:
        group = frame["group"]
        self.recoveries.append(frame)
        if not frame["recovered"]:
            self._gap(group, "recovered:false")
        if "ticket" in frame:  # a fresh one (tickets expire)
            self.tickets[group] = frame["ticket"]
        pos = self.positions.get(group)
        if (
            pos is None
            or pos.epoch != frame["epoch"]
            or (offset_key(frame["offset"]) > offset_key(pos.offset))
        ):
            self.positions[group] = Position(frame["epoch"], frame["offset"])

    def _on_data(self, data: str, group: str | None, epoch: str | None, offset: str | None) -> None:
        """``chat|<room>,<name>,<text>`` is delivered; anything else is kept as a push."""
        name, bar, rest = data.partition("|")
        parts = rest.split(",", 2)
        if name != "chat" or not bar or len(parts) != 3:
            self.pushes.append(data)
            return
        room, by, text = parts
        group = group or group_of(room)
        if group in self.delivered:
            self.delivered[group].append(Delivered(by, text, epoch, offset, time.monotonic()))

    def _gap(self, group: str, why: str) -> None:
        self.gaps.append(Gap(group, why, len(self.delivered.get(group, [])), time.monotonic()))

    def said(self, group: str, by: str, prefix: str) -> list[str]:
        return [
            d.text
            for d in self.delivered.get(group, [])
            if d.by == by and d.text.startswith(prefix)
        ]


@dataclass
class Sent:
    room: str
    text: str
    at: float
    # "ok"; "warned": a chat_warning came first (the hub raised BroadcastUnavailable:
    # Redis unreachable, or a replica it knows of not listening); "failed": no result.
    status: str = "pending"
    why: str = ""  # why it failed


class Publisher:
    """Says ``<phase><n>`` to the rooms in turn at ``rate`` per second, one call at a time.

    A call is confirmed by its result. A ``chat_warning`` push before the result
    means the hub could not promise that every replica got it.
    """

    def __init__(self, client: V2Client, rate: float) -> None:
        self.client = client
        self.rate = rate
        self.sent: list[Sent] = []
        self.phase = ""
        self._count = 0
        self._running = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, phase: str) -> None:
        self.phase = phase
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def texts(self, room: str | None, phase: str, statuses: set[str]) -> list[str]:
        """What was said in ``phase`` to ``room`` (None: any) with one of ``statuses``."""
        return [
            s.text
            for s in self.sent
            if room in {None, s.room} and s.text.startswith(phase) and s.status in statuses
        ]

    async def _run(self) -> None:
        client = self.client
        rooms = client.rooms
        tick = 1 / self.rate
        next_at = time.monotonic()
        while True:
            await self._running.wait()
            next_at = max(next_at + tick, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())
            if not client.ready.is_set():
                continue  # not joined on this connection yet: `say` would be refused
            room = rooms[self._count % len(rooms)]
            sent = Sent(room, f"{self.phase}{self._count}", time.monotonic())
            self._count += 1
            self.sent.append(sent)
            warnings = sum(p.startswith("chat_warning|") for p in client.pushes)
            try:
                await client.call("say", room, sent.text, timeout=5)
            except CallFailed as exc:
                sent.status, sent.why = "failed", str(exc)
                continue
            later = sum(p.startswith("chat_warning|") for p in client.pushes)
            sent.status = "warned" if later > warnings else "ok"


@dataclass
class Verdict:
    """How one client's delivery of one room in one phase compares with what was said."""

    outcome: str  # "exact", "gap told" or "wrong"
    detail: str = ""
    gaps: list[str] = field(default_factory=list)


def verdict(got: list[str], expected: list[str], gaps: list[Gap], index: list[int]) -> Verdict:
    """``got`` (with each one's index in the client's stream) against ``expected``.

    Without a gap it must be ``expected`` exactly. With one it must still be in
    order and once each, and from the first message after the last gap on, it
    must be ``expected``'s tail: the stream after the gap has no hole.
    """
    why = [g.why for g in gaps]
    if len(set(got)) != len(got):
        return Verdict("wrong", f"duplicates: {sorted({t for t in got if got.count(t) > 1})}", why)
    order = [int("".join(ch for ch in t if ch.isdigit())) for t in got]
    if order != sorted(order):
        return Verdict("wrong", f"out of order: {got}", why)
    if not gaps:
        if got == expected:
            return Verdict("exact")
        missing = [t for t in expected if t not in got]
        extra = [t for t in got if t not in expected]
        return Verdict("wrong", f"missing {missing} extra {extra} (no gap told)", why)
    last = gaps[-1].index
    after = [t for t, i in zip(got, index, strict=True) if i >= last]
    if not after:
        return Verdict("wrong", "nothing delivered after the gap", why)
    if after[0] not in expected or expected[expected.index(after[0]) :] != after:
        return Verdict("wrong", f"a hole after the gap: got {after}", why)
    return Verdict("gap told", gaps=why)


def expected_texts(
    clients: list[V2Client], publisher: Publisher, room: str, phase: str
) -> list[str]:
    """What every member of ``room`` must get of ``phase``: the confirmed messages, and
    the unconfirmed or warned ones that some client got (they were published)."""
    group = group_of(room)
    heard = {t for c in clients for t in c.said(group, publisher.client.name, phase)}
    confirmed = set(publisher.texts(room, phase, {"ok"}))
    return [
        t
        for t in publisher.texts(room, phase, {"ok", "warned", "failed", "pending"})
        if t in confirmed or t in heard
    ]


def phase_verdicts(
    clients: list[V2Client], publisher: Publisher, phase: str, since: float, until: float
) -> dict[str, dict[str, Verdict]]:
    """Per client and room: its delivery of ``phase``'s messages, and the gaps told meanwhile."""
    by = publisher.client.name
    out: dict[str, dict[str, Verdict]] = {}
    for room in publisher.client.rooms:
        group = group_of(room)
        receivers = [c for c in clients if group in c.delivered]
        expected = expected_texts(clients, publisher, room, phase)
        for client in receivers:
            stream = client.delivered[group]
            picked = [
                (d.text, i) for i, d in enumerate(stream) if d.by == by and d.text.startswith(phase)
            ]
            gaps = [g for g in client.gaps if g.group == group and since <= g.at <= until]
            out.setdefault(client.name, {})[room] = verdict(
                [t for t, _ in picked], expected, gaps, [i for _, i in picked]
            )
    return out


def unlike(verdicts: dict[str, dict[str, Verdict]], outcome: str) -> dict[str, dict[str, str]]:
    """The clients and rooms whose outcome is not ``outcome``, with what happened instead."""
    out: dict[str, dict[str, str]] = {}
    for name, rooms in verdicts.items():
        for room, v in rooms.items():
            if v.outcome != outcome:
                out.setdefault(name, {})[room] = f"{v.outcome}: {v.detail} gaps {v.gaps}"
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def peak_per_second(times: list[float]) -> int:
    """The most events that fell into one second (a sliding window)."""
    ordered = sorted(times)
    best = start = 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= 1:
            start += 1
        best = max(best, end - start + 1)
    return best


# The page's TZ, wrapped as it is defined: every instance reports what it hands on.
# ``phase`` is set by the test; a recovery event records it and how many chat
# messages had been delivered by then.
PAGE_PROBE = """
window.__tz = {chat: [], recoveries: [], opens: 0, closes: 0, phase: '', events: []};
let wrapped;
Object.defineProperty(window, 'TZ', {
  configurable: true,
  get() { return wrapped; },
  set(TZ) {
    wrapped = class extends TZ {
      constructor(...args) {
        super(...args);
        window.__tzClient = this;
        const probe = window.__tz;
        this.on('chat', (room, name, ...text) => {
          probe.chat.push([room, name, text.join(',')]);
        });
        this.on('open', () => {
          probe.opens += 1;
          probe.events.push(['open', Date.now()]);
        });
        this.on('close', (event) => {
          probe.closes += 1;
          probe.events.push(['close ' + event.code, Date.now()]);
        });
        this.on('recovery', (event) => {
          const at = {index: probe.chat.length, phase: probe.phase};
          probe.recoveries.push(Object.assign(at, event));
        });
      }
    };
  },
});
"""


class ChatPage:
    """The template's page, logged in, in headless Chromium; what its tz.js delivered."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name
        self.errors: list[str] = []
        self.host = ""

    async def probe(self) -> dict[str, Any]:
        return dict(await self.page.evaluate("window.__tz"))

    async def socket_state(self) -> dict[str, Any]:
        """For a failure message: where the page's client is (tz.js internals, read only)."""
        return dict(
            await self.page.evaluate(
                """() => {
                  const tz = window.__tzClient;
                  return {socket: tz.ws ? tz.ws.readyState : null,
                          protocol: tz.ws && tz.ws.protocol,
                          reconnect_timer: tz._timer !== null, attempt: tz._attempt,
                          now: Date.now()};
                }"""
            )
        )

    async def mark(self, what: str) -> None:
        """Put ``what`` among the socket's events, on the page's clock."""
        await self.page.evaluate("(what) => { window.__tz.events.push([what, Date.now()]); }", what)

    async def set_phase(self, phase: str) -> None:
        await self.page.evaluate("(phase) => { window.__tz.phase = phase; }", phase)

    async def said(self, room: str, by: str, prefix: str) -> list[str]:
        chat = (await self.probe())["chat"]
        return [t for r, name, t in chat if r == room and name == by and t.startswith(prefix)]

    async def verdict(self, room: str, by: str, phase: str, expected: list[str]) -> Verdict:
        """As ``verdict``, the gaps being the page's recovered:false events of ``phase``."""
        probe = await self.probe()
        picked = [
            (t, i)
            for i, (r, name, t) in enumerate(probe["chat"])
            if r == room and name == by and t.startswith(phase)
        ]
        gaps = [
            Gap(e["group"], "recovered:false", e["index"], 0.0)
            for e in probe["recoveries"]
            if e["phase"] == phase and not e["recovered"] and e["group"] == group_of(room)
        ]
        return verdict([t for t, _ in picked], expected, gaps, [i for _, i in picked])


@contextlib.asynccontextmanager
async def chat_page(
    base: str, name: str, *, chromium: str, args: list[str]
) -> AsyncIterator[ChatPage]:
    """Log ``name`` in on the page at ``base`` and wait until its chat joined the room."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = await browser.new_page()
            page.set_default_timeout(15_000)
            chat = ChatPage(page, name)
            page.on("pageerror", lambda exc: chat.errors.append(str(exc)))
            await page.add_init_script(PAGE_PROBE)
            await page.goto(f"{base}/")
            await page.fill("#login-name", name)
            await page.click("#login-form button")
            await page.wait_for_selector("#status[data-state=open]")
            await page.wait_for_function(
                "document.getElementById('chat-server').textContent.startsWith('via ')"
            )
            chat.host = (await page.text_content("#chat-server") or "").removeprefix("via ")
            yield chat
        finally:
            await browser.close()
