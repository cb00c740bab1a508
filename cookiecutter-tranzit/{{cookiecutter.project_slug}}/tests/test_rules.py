"""The websocket rules, over a real websocket at /ws."""

import json
import re


async def test_echo_in_text_form(client):
    ws = await client.ws_connect("/ws")
    await ws.send_str("echo|hello")
    assert await ws.receive_str(timeout=5) == "echo|hello"
    await ws.close()


async def test_echo_in_json_form_keeps_commas(client):
    ws = await client.ws_connect("/ws")
    await ws.send_str(json.dumps({"rule": "echo", "args": ["a, b"], "id": 1}))
    reply = json.loads(await ws.receive_str(timeout=5))
    assert reply == {"id": 1, "rule": "echo", "result": "a, b"}
    await ws.close()


async def test_clock_keeps_pushing_the_time(client):
    ws = await client.ws_connect("/ws")
    await ws.send_str("clock|")
    for _ in range(2):
        assert re.fullmatch(r"clock\|\d\d:\d\d:\d\d", await ws.receive_str(timeout=5))
    await ws.close()


async def test_unknown_rule_gets_an_error_and_the_connection_stays_usable(client):
    ws = await client.ws_connect("/ws")
    await ws.send_str("no_such_rule|x")
    assert (await ws.receive_str(timeout=5)).startswith("error|unknown_rule,no_such_rule,")
    await ws.send_str("echo|still here")
    assert await ws.receive_str(timeout=5) == "echo|still here"
    await ws.close()
