"""Which calling convention a handler gets, decided by what it can take, never by a name.

The rule (docs/protocol.md): a handler that can take the keywords ``send_func``
and ``writer`` (it names both, or has ``**kwargs``) is called the 2018 way;
any other is called ``handler(conn, *args)``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tranzit.app import create_app
from tranzit.compat.handlers import LegacyRule, adapt
from tranzit.config import Config
from tranzit.errors import AppLoadError
from tranzit.project import Project
from tranzit.ws.rules import Rule, RuleTable


async def echo_client(client, text):  # a connection-first handler not naming it conn
    return f"{client.id != ''}:{text}"


async def old_star(*args, **kwargs):
    await kwargs["send_func"](kwargs["writer"], "old_star|" + ",".join(args))


async def old_named(text, send_func, writer):
    await send_func(writer, f"old_named|{text}")
    return "ignored in the text form"


def sync_first(ws, a, b):  # a plain function: its return value is the reply
    return int(a) + int(b)


async def kw_only(c, *, times=2):
    return "x" * times


@pytest.mark.parametrize(
    ("handler", "legacy"),
    [
        (echo_client, False),
        (old_star, True),
        (old_named, True),
        (sync_first, False),
        (kw_only, False),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_the_convention_follows_what_the_handler_can_take(handler: Any, legacy: bool) -> None:
    table = RuleTable.from_dict({"r": handler}, adapt=adapt)
    assert isinstance(table["r"], LegacyRule) is legacy
    assert isinstance(table["r"], Rule)


def test_without_the_2018_adapter_every_handler_is_connection_first() -> None:
    table = RuleTable.from_dict({"r": old_star})
    assert type(table["r"]) is Rule


def test_a_handler_that_cannot_take_the_connection_is_refused_when_loaded() -> None:
    async def nothing() -> str:
        return "x"

    with pytest.raises(AppLoadError) as info:
        RuleTable.from_dict({"nothing": nothing}, app="blog", adapt=adapt)
    message = str(info.value)
    assert "app 'blog'" in message and "ws_rules['nothing']" in message
    assert "handler(conn, *args)" in message
    assert "\n" not in message


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    rules = RuleTable.from_dict(
        {
            "echo": echo_client,
            "old_star": old_star,
            "old_named": old_named,
            "add": sync_first,
            "kw": kw_only,
        },
        adapt=adapt,
    )
    config = Config(apps=("main",))
    app = create_app(config, Project(root=Path("."), rules=rules))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def test_both_conventions_answer(client: TestClient[web.Request, web.Application]) -> None:
    ws = await client.ws_connect("/ws")
    for sent, expected in [
        ("echo|a, b", "echo|True:a, b"),  # one parameter after the connection: one argument
        ("old_star|a, b", "old_star|a, b"),  # the 2018 split, joined back by the handler
        ("old_named|hi", "old_named|hi"),  # its return value reaches no text client
        ("add|2,3", "add|5"),
        ("kw|", "kw|xx"),
    ]:
        await ws.send_str(sent)
        assert await ws.receive_str(timeout=5) == expected
    await ws.send_json({"rule": "old_named", "args": ["json"], "id": 7})
    assert await ws.receive_json(timeout=5) == {
        "id": 7,
        "rule": "old_named",
        "data": "old_named|json",
    }
    # A JSON call's promise settles: the 2018 handler's return value is its result.
    assert await ws.receive_json(timeout=5) == {
        "id": 7,
        "rule": "old_named",
        "result": "ignored in the text form",
    }
    await ws.close()


# -- calls that cannot wait run without a task -------------------------------------------

LAST: contextvars.ContextVar[str] = contextvars.ContextVar("last", default="unset")


async def remembers(conn, text):  # no await: it cannot wait
    before = LAST.get()
    LAST.set(text)
    return f"{before}->{text}"


async def waits(conn, seconds):
    await asyncio.sleep(float(seconds))
    return "waited"


class Scope:
    async def __aenter__(self) -> Scope:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def waits_in_a_with(conn):
    async with Scope():
        return asyncio.current_task() is not None


def plain(conn):
    return "plain"


def returns_a_coroutine(conn, text):
    return remembers(conn, text.upper())


async def raises(conn):
    raise LookupError("no such thing")


class Callable:
    async def __call__(self, conn):
        return "object"


@pytest.mark.parametrize(
    ("handler", "inline"),
    [
        (remembers, True),
        (plain, True),
        (returns_a_coroutine, True),
        (raises, True),
        (waits, False),
        (waits_in_a_with, False),
        (Callable(), False),
        (old_star, False),  # a 2018 handler awaits send_func
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__),
)
def test_what_can_wait_is_decided_once_per_rule(handler: Any, inline: bool) -> None:
    assert RuleTable.from_dict({"r": handler}, adapt=adapt)["r"].inline is inline


async def test_calls_that_cannot_wait_behave_as_calls_in_tasks() -> None:
    rules = RuleTable.from_dict(
        {
            "remember": remembers,
            "wait": waits,
            "with": waits_in_a_with,
            "plain": plain,
            "coro": returns_a_coroutine,
            "raises": raises,
            "object": Callable(),
        },
        adapt=adapt,
    )
    app = create_app(Config(apps=("main",)), Project(root=Path("."), rules=rules))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ws = await client.ws_connect("/ws")
        # Each call has its own copy of the context: nothing leaks into the next one.
        for text in ("a", "b"):
            await ws.send_str(f"remember|{text}")
            assert await ws.receive_str(timeout=5) == f"remember|unset->{text}"
        for sent, expected in [
            ("plain|", "plain|plain"),
            ("coro|x", "coro|unset->X"),
            ("object|", "object|object"),
            ("with|", "with|True"),  # async with may wait: it runs as its own task
        ]:
            await ws.send_str(sent)
            assert await ws.receive_str(timeout=5) == expected
        await ws.send_str("raises|")
        assert await ws.receive_str(timeout=5) == (
            "error|handler_error,raises,LookupError: no such thing"
        )
        # A waiting call does not hold up one that cannot wait.
        await ws.send_str("wait|0.3")
        await ws.send_str("remember|c")
        assert await ws.receive_str(timeout=5) == "remember|unset->c"
        assert await ws.receive_str(timeout=5) == "wait|waited"
        await ws.close()
