"""Turning the values of an app's ``routes`` dict into aiohttp routes.

Accepted, per path:

* a class with ``async get/post/put/delete/patch(self, request)`` methods
  (``TZView`` subclasses or any plain class, as in the original): one instance
  is made at start-up and each method it defines becomes a route; any other
  method gets aiohttp's 405 with an ``Allow`` header;
* an ``aiohttp.web.View`` subclass;
* a plain aiohttp handler ``async def handler(request)`` (all methods).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import AppLoadError, show, show_key

__all__ = ["HTTP_METHODS", "TZView", "add_view"]

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


class TZView:
    """Base class of the original class views.

    Define ``async def get(self, request)`` (and ``post``, ``put``,
    ``delete``, ``patch``) returning aiohttp responses. Methods a view does not
    define answer 405 Method Not Allowed, listing the ones it does.
    """


def add_view(router: web.UrlDispatcher, path: str, view: Any, *, app: str) -> None:
    """Register ``view`` (see the module docstring) at ``path``.

    A pattern aiohttp cannot compile (``/{x``, ``/{id:[}``) is an
    :class:`~tranzit.errors.AppLoadError` naming the app and the pattern.
    """
    if inspect.isclass(view) and issubclass(view, web.View):
        with _pattern_errors(app, path):
            router.add_view(path, view)
        return
    if inspect.isclass(view):
        try:
            instance = view()
        except TypeError as exc:
            raise AppLoadError(
                f"app {app!r}: route {show(path)}: cannot create view {view.__name__}(): "
                f"{show_key(str(exc), 120)}"
            ) from exc
        handlers: dict[str, Handler] = {
            m: getattr(instance, m) for m in HTTP_METHODS if callable(getattr(instance, m, None))
        }
        if not handlers:
            raise AppLoadError(
                f"app {app!r}: route {show(path)}: expected view {view.__name__} to define at "
                f"least one of {', '.join(HTTP_METHODS)}"
            )
        for method, handler in handlers.items():
            with _pattern_errors(app, path):
                if method == "get":  # also answers HEAD, as aiohttp's add_get does
                    router.add_get(path, handler)
                else:
                    router.add_route(method.upper(), path, handler)
        return
    if callable(view):
        with _pattern_errors(app, path):
            router.add_route("*", path, view)
        return
    raise AppLoadError(
        f"app {app!r}: route {show(path)}: expected a view class or an aiohttp handler, "
        f"found {show(view)}"
    )


@contextmanager
def _pattern_errors(app: str, path: str) -> Iterator[None]:
    try:
        yield
    except ValueError as exc:  # aiohttp's way of refusing a path pattern
        raise AppLoadError(
            f"app {app!r}: route {show(path)}: expected a valid aiohttp path pattern, "
            f"found: {show_key(str(exc), 120)}"
        ) from None
