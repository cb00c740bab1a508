"""Views and websocket rules measured by ``python -m bench``."""

import time

from tranzit import web
from tranzit.ws.endpoint import REGISTRY


class HelloView(web.TZView):
    async def get(self, request):
        return web.Response(text="Hello, World!")


class EchoView(web.TZView):
    async def post(self, request):
        return web.json_response(await request.json())


async def echo(conn, text):
    return text


async def broadcast(conn, payload):
    """Send ``b|payload`` to every connection of this endpoint.

    tranzit has no broadcast API yet: this iterates the app's connection
    registry, as a user would today. Returns the seconds the loop took.
    """
    started = time.perf_counter()
    message = "b|" + payload
    for other in conn.request.app[REGISTRY]:
        try:  # noqa: SIM105 - as the raw peer: no context manager per send
            await other.send_text(message)
        except ConnectionError:
            pass  # a client that left during the broadcast
    return "%.6f" % (time.perf_counter() - started)
