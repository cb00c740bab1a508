"""Which calling convention a handler gets, decided by what it can take, never by a name.

The rule (docs/protocol.md): a handler that can take the keywords ``send_func``
and ``writer`` (it names both, or has ``**kwargs``) is called the 2018 way;
any other is called ``handler(conn, *args)``.
"""

from __future__ import annotations

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
