"""What every peer shares: the hello body, the middleware's header."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

HELLO = "Hello, World!"
#: Header added by the "user middleware" of the JSON echo workload.
MIDDLEWARE_HEADER = ("X-Bench-Middleware", "1")


@web.middleware
async def header_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The JSON echo's "user middleware" for the aiohttp-based peers (tranzit, aiohttp)."""
    response = await handler(request)
    response.headers[MIDDLEWARE_HEADER[0]] = MIDDLEWARE_HEADER[1]
    return response
