"""``tranzit.web`` of 2018: everything of :mod:`aiohttp.web`, plus tranzit's classes.

``from tranzit import web`` then ``web.Response(...)``, ``web.TZView``,
``web.MainServer(...)`` and ``web.WebSocketServer(...)`` all work.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from os import PathLike

from aiohttp.typedefs import Middleware
from aiohttp.web import *  # noqa: F403  (re-exported on purpose: the old API)
from aiohttp.web import __all__ as _aiohttp_web_all

from ..config import Config
from ..errors import TranzitError
from ..loader import load
from ..project import Project
from ..serve import run
from ..views import TZView as TZView
from .wsserver import WebSocketServer as WebSocketServer

__all__ = [*_aiohttp_web_all, "MainServer", "TZView", "WebSocketServer"]


class MainServer:
    """``MainServer(config_file, project_dir, middlewares=[...]).run()``, as in the original.

    ``run()`` serves HTTP and, when ``ws_server_on``, the websocket server in
    one process. Configuration and app errors print one line and exit with the
    CLI's codes instead of a traceback.
    """

    def __init__(
        self,
        config_file: str | PathLike[str] = "server.yml",
        project_dir: str | PathLike[str] | None = None,
        middlewares: Iterable[Middleware] = (),
    ) -> None:
        self.project_dir = project_dir
        self.config_file = config_file
        self.middlewares = list(middlewares)

    def load(self) -> tuple[Config, Project]:
        """Read the config and import the apps (raises :class:`TranzitError`)."""
        return load(self.project_dir, self.config_file)

    def run(self) -> None:
        try:
            config, project = self.load()
            run(config, project, middlewares=self.middlewares)
        except TranzitError as exc:
            print(f"tranzit: {exc}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
