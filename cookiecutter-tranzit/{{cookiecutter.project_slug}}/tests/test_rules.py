"""The websocket rules, over a real websocket at /ws, logged in (see test_login.py)."""

import json
import re
{% if cookiecutter.database == "postgres" %}
import asyncpg
{%- endif %}
import pytest


@pytest.fixture
def connect(client, login):
    """``ws = await connect("alice")``: alice logs in and opens her websocket."""

    async def open_ws(name="tester"):
        session = await login(name)
        return await session.ws_connect(client.make_url("/ws"))

    return open_ws


async def test_echo_in_text_form(connect):
    ws = await connect()
    await ws.send_str("echo|hello")
    assert await ws.receive_str(timeout=5) == "echo|hello"
    await ws.close()


async def test_echo_in_json_form_keeps_commas(connect):
    ws = await connect()
    await ws.send_str(json.dumps({"rule": "echo", "args": ["a, b"], "id": 1}))
    reply = json.loads(await ws.receive_str(timeout=5))
    assert reply == {"id": 1, "rule": "echo", "result": "a, b"}
    await ws.close()


async def test_clock_keeps_pushing_the_time(connect):
    ws = await connect()
    await ws.send_str("clock|")
    for _ in range(2):
        assert re.fullmatch(r"clock\|\d\d:\d\d:\d\d", await ws.receive_str(timeout=5))
    await ws.close()


async def test_unknown_rule_gets_an_error_and_the_connection_stays_usable(connect):
    ws = await connect()
    await ws.send_str("no_such_rule|x")
    assert (await ws.receive_str(timeout=5)).startswith("error|unknown_rule,no_such_rule,")
    await ws.send_str("echo|still here")
    assert await ws.receive_str(timeout=5) == "echo|still here"
    await ws.close()


@pytest.fixture
def joined(connect):
    """``ws = await joined("alice")``: alice's websocket in ``room`` (her join notice read)."""

    async def join(name, room="lobby"):
        ws = await connect(name)
        await ws.send_str(f"join|{room}")
        # The notice to the room was sent before the reply: it arrives first.
        assert await ws.receive_str(timeout=5) == f"chat|{room},*,{name} joined"
        reply = await ws.receive_str(timeout=5)
        assert re.fullmatch(rf"join\|{room},[0-9a-f]+-\d+,\S+", reply), reply
        return ws

    return join


async def test_chat_reaches_every_member_of_the_room_only(joined):
    alice = await joined("alice")
    bob = await joined("bob")
    assert await alice.receive_str(timeout=5) == "chat|lobby,*,bob joined"
    other = await joined("carol", room="elsewhere")

    # JSON form, so the text may hold commas; the sender gets it too.
    await alice.send_str(json.dumps({"rule": "say", "args": ["lobby", "hi, all"], "id": 1}))
    assert await bob.receive_str(timeout=5) == "chat|lobby,alice,hi, all"
    # The message to the room, then the call's result: the order they were sent in.
    assert await alice.receive_str(timeout=5) == "chat|lobby,alice,hi, all"
    assert json.loads(await alice.receive_str(timeout=5)) == {
        "id": 1,
        "rule": "say",
        "result": None,
    }

    # Not a member of "lobby": nothing arrives (an echo proves the queue is empty).
    await other.send_str("echo|nothing else")
    assert await other.receive_str(timeout=5) == "echo|nothing else"
    for ws in (alice, bob, other):
        await ws.close()


async def test_messages_arrive_in_the_order_they_were_said(joined):
    alice = await joined("alice")
    bob = await joined("bob")
    await alice.receive_str(timeout=5)  # bob joined
    for n in range(20):
        await alice.send_str(f"say|lobby,message {n}")
    got = [await bob.receive_str(timeout=5) for _ in range(20)]
    assert got == [f"chat|lobby,alice,message {n}" for n in range(20)]
    await alice.close()
    await bob.close()


async def test_say_needs_a_join_and_a_valid_room(connect):
    ws = await connect()
    await ws.send_str("say|lobby,hello")
    assert await ws.receive_str(timeout=5) == "error|not_joined,say,join the room 'lobby' first"
    await ws.send_str("join|no rooms with spaces")
    assert (await ws.receive_str(timeout=5)).startswith("error|bad_room,join,")
    await ws.close()


async def test_leaving_and_closing_end_the_membership(joined):
    alice = await joined("alice")
    bob = await joined("bob")
    await alice.receive_str(timeout=5)  # bob joined
    await bob.send_str("leave|lobby")
    assert await alice.receive_str(timeout=5) == "chat|lobby,*,bob left"
    carol = await joined("carol")
    assert await alice.receive_str(timeout=5) == "chat|lobby,*,carol joined"
    await carol.close()
    await alice.send_str("say|lobby,still here")
    assert await alice.receive_str(timeout=5) == "chat|lobby,alice,still here"
    # bob left and carol is gone: neither gets it (bob's echo comes first).
    await bob.send_str("echo|done")
    assert await bob.receive_str(timeout=5) == "echo|done"
    await alice.close()
    await bob.close()
{%- if cookiecutter.database == "postgres" %}


async def test_a_new_member_gets_the_room_history_first(joined, connect):
    alice = await joined("alice")
    said = ["one", "two, with a comma", "three"]
    for n, text in enumerate(said):
        await alice.send_str(json.dumps({"rule": "say", "args": ["lobby", text], "id": n}))
        assert await alice.receive_str(timeout=5) == f"chat|lobby,alice,{text}"
        await alice.receive_str(timeout=5)  # the call's result: the message is stored

    bob = await connect("bob")
    await bob.send_str("join|lobby")
    got = [await bob.receive_str(timeout=5) for _ in said]
    assert got == [f"history|lobby,alice,{text}" for text in said]
    # Then, as for every member, the notice and the reply; the history came before them.
    assert await bob.receive_str(timeout=5) == "chat|lobby,*,bob joined"
    assert (await bob.receive_str(timeout=5)).startswith("join|lobby,")
    # Another room has a history of its own: none (joined() checks the notice comes first).
    carol = await joined("carol", room="elsewhere")
    for ws in (alice, bob, carol):
        await ws.close()


async def test_a_leave_right_after_a_join_is_not_lost(joined, connect):
    alice = await joined("alice")
    bob = await connect("bob")
    # Back to back: the leave waits for the join, which reads the history first.
    await bob.send_str("join|lobby")
    await bob.send_str("leave|lobby")
    assert await alice.receive_str(timeout=5) == "chat|lobby,*,bob joined"
    assert await alice.receive_str(timeout=5) == "chat|lobby,*,bob left"
    await alice.send_str("say|lobby,is bob here?")
    assert await alice.receive_str(timeout=5) == "chat|lobby,alice,is bob here?"
    await bob.send_str("echo|done")
    got = [await bob.receive_str(timeout=5) for _ in range(3)]
    assert got[0] == "chat|lobby,*,bob joined" and got[1].startswith("join|lobby,"), got
    assert got[2] == "echo|done", got  # and not alice's message: bob is no member
    for ws in (alice, bob):
        await ws.close()


async def test_a_database_error_is_an_error_reply(joined, database_url):
    alice = await joined("alice")
    # As if the migrations had not been applied: the table is not there.
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("DROP TABLE chat_message")
    finally:
        await connection.close()
    await alice.send_str("say|lobby,hello")
    reply = await alice.receive_str(timeout=5)
    assert reply == "error|db_unavailable,say,the chat is unavailable, try again later"
    # Not sent to the room either: the room gets only what the database kept.
    await alice.send_str("echo|nothing else")
    assert await alice.receive_str(timeout=5) == "echo|nothing else"
    await alice.close()
{%- endif %}
