"""Run a server coroutine on uvloop until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import uvloop


def run(start: Callable[[], Awaitable[Callable[[], Awaitable[None]]]]) -> None:
    """``start()`` starts serving and returns a ``stop()`` coroutine function."""

    async def main() -> None:
        stop = await start()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        print("ready", flush=True)
        await done.wait()
        await stop()

    uvloop.run(main())  # asyncio.Runner(loop_factory=...) is 3.11+
