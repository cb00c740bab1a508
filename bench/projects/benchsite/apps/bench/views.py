"""Views and websocket rules measured by ``python -m bench``."""

import time

from tranzit import web
from tranzit.ws import BroadcastUnavailable


class HelloView(web.TZView):
    async def get(self, request):
        return web.Response(text="Hello, World!")


class EchoView(web.TZView):
    async def post(self, request):
        return web.json_response(await request.json())


async def echo(conn, text):
    return text


async def echo_2018(*args, **kwargs):
    """The same echo in the 2018 calling convention: it sends through ``send_func``."""
    await kwargs["send_func"](kwargs["writer"], "echo_2018|" + ",".join(args))


async def broadcast(conn, payload):
    """Send ``b|payload`` to every connection: ``hub.broadcast``, as a user would.

    Returns the seconds the call took: it queues the message in each
    connection's bounded outbox; each connection's own task then sends it.
    """
    started = time.perf_counter()
    await conn.hub.broadcast("b|" + payload)
    return "%.6f" % (time.perf_counter() - started)


async def join(conn, group):
    conn.join(group)
    return "joined"


async def say(conn, group, seq):
    """``m|<seq>`` to ``group`` on every replica; says whether every replica got it."""
    try:
        await conn.hub.send_group(group, "m|" + seq)
    except BroadcastUnavailable as exc:
        return f"unavailable,{seq},{exc}"
    return f"ok,{seq}"
