"""The plain aiohttp peer: the same two routes, for the same gunicorn worker."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .common import HELLO, header_middleware


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=HELLO)


async def echo(request: web.Request) -> web.Response:
    return web.json_response(await request.json())


def _app(middlewares: list[Handler]) -> web.Application:
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    return app


async def hello_app() -> web.Application:
    return _app([])


async def echo_app() -> web.Application:
    return _app([header_middleware])
