"""tranzit's HTTP app for gunicorn, built by ``tranzit.app.create_app``.

``bench.servers.tranzit_http:hello_app`` — the bench project as is;
``bench.servers.tranzit_http:echo_app`` — the same with a user middleware.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from tranzit.app import create_app
from tranzit.config import load_config
from tranzit.project import load_project

from .common import header_middleware

PROJECT = Path(__file__).resolve().parent.parent / "projects" / "benchsite"


def _app(middlewares: list[Handler]) -> web.Application:
    config = load_config(PROJECT / "server.yml")
    return create_app(config, load_project(PROJECT, config), middlewares=middlewares)


async def hello_app() -> web.Application:
    return _app([])


async def echo_app() -> web.Application:
    return _app([header_middleware])
