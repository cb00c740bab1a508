"""Websocket rules of the {{ cookiecutter.first_app }} app, in both calling conventions.

A rule runs as its own task per call; when the client goes away, tranzit
cancels it, so an endless rule needs no clean-up of its own.
"""

import asyncio
import time

from tranzit.ws import Connection


async def clock(*args, **kwargs):
    """Old style (``send_func``/``writer``): push the server's time every second, forever.

    Each message is ``clock|HH:MM:SS``, which the page's ``tz.on("clock", ...)`` shows.
    """
    send_func, writer = kwargs["send_func"], kwargs["writer"]
    while True:
        await send_func(writer, "clock|" + time.strftime("%H:%M:%S"))
        await asyncio.sleep(1)


async def echo(conn: Connection, text: str) -> str:
    """Connection style: the return value is the reply (``echo|<text>``, or a JSON result)."""
    return text
