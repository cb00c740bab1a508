"""Helpers for testing a tranzit project with a real server on 127.0.0.1.

```python
from tranzit.testing import project_client

async def test_page():
    async with project_client(PROJECT_DIR) as client:
        resp = await client.get("/")
        ws = await client.ws_connect("/ws")
```
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from .app import create_app
from .loader import load

__all__ = ["project_app", "project_client"]


def project_app(
    project_dir: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> web.Application:
    """The project's HTTP application, as ``tranzit run`` builds it.

    ``overrides`` change settings (``ws_max_tasks=2``); ``environ`` replaces
    ``os.environ`` for ``TRANZIT_*`` lookups (default: none, for repeatable tests).
    """
    config, project = load(project_dir, environ=environ or {}, required=False, **overrides)
    return create_app(config, project)


@asynccontextmanager
async def project_client(
    project_dir: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An aiohttp test client bound to the project's app served on 127.0.0.1."""
    app = project_app(Path(project_dir), environ=environ, **overrides)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client
