"""The uvicorn + starlette peer (run with uvloop and httptools, uvicorn[standard])."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .common import HELLO, MIDDLEWARE_HEADER

_HEADER = (MIDDLEWARE_HEADER[0].lower().encode(), MIDDLEWARE_HEADER[1].encode())


async def hello(request: Request) -> Response:
    return PlainTextResponse(HELLO)


async def echo(request: Request) -> Response:
    return JSONResponse(await request.json())


class HeaderMiddleware:
    """A pure ASGI middleware (starlette's fast form, not BaseHTTPMiddleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), _HEADER]
            await send(message)

        await self.app(scope, receive, send_with_header)


_routes = [Route("/", hello), Route("/echo", echo, methods=["POST"])]

hello_app = Starlette(routes=_routes)
echo_app = HeaderMiddleware(Starlette(routes=_routes))
