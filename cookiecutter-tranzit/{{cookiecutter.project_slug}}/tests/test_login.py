"""Logging in with a name, and the websocket that needs it."""

import aiohttp
import pytest


async def test_the_page_asks_for_a_name_first(client):
    html = await (await client.get("/")).text()
    assert 'id="login-form"' in html
    # Nothing on the page tries the websocket before the login.
    assert "tz.js" not in html and 'id="chat-form"' not in html


async def test_logging_in_shows_the_chat_and_logging_out_ends_it(client, login):
    alice = await login("alice")
    async with alice.get(client.make_url("/")) as resp:
        html = await resp.text()
    assert '<span id="user">alice</span>' in html and 'id="chat-form"' in html
    async with alice.post(client.make_url("/logout")) as resp:
        assert resp.status == 200
        assert 'id="login-form"' in await resp.text()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await alice.ws_connect(client.make_url("/ws"))
    assert info.value.status == 401


async def test_the_name_is_escaped_and_cleaned(client, login):
    mallory = await login("<b>mal,lory|</b>")
    async with mallory.get(client.make_url("/")) as resp:
        html = await resp.text()
    assert "<b>mal" not in html
    assert '<span id="user">&lt;b&gt;mal lory &lt;/b&gt;</span>' in html


async def test_an_empty_name_is_refused(client):
    resp = await client.post("/login", data={"name": " , "})
    assert resp.status == 400
    assert 'id="login-error"' in await resp.text()
    resp = await client.get("/")
    assert 'id="login-form"' in await resp.text()


async def test_the_websocket_needs_the_session(client):
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws")
    assert info.value.status == 401


async def test_a_forged_cookie_is_no_session(client):
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws", headers={"Cookie": "AIOHTTP_SESSION=forged"})
    assert info.value.status == 401


async def test_the_chat_name_comes_from_the_session(client, login):
    alice = await login("alice")
    ws = await alice.ws_connect(client.make_url("/ws"))
    await ws.send_str("join|lobby")
    assert await ws.receive_str(timeout=5) == "chat|lobby,*,alice joined"
    await ws.receive_str(timeout=5)  # the join reply
    # A client cannot speak under another name: there is no name argument at all.
    await ws.send_str("say|lobby,hi")
    assert await ws.receive_str(timeout=5) == "chat|lobby,alice,hi"
    await ws.close()
