"""The rule table shared by all apps, and how one handler is called.

Two calling conventions, fixed per handler when the table is built:

* old style ``handler(*args, send_func=..., writer=...)``, exactly as the
  original server called it;
* connection style ``handler(conn, *args)``, chosen when the first parameter is
  named ``conn`` or annotated as :class:`~tranzit.ws.connection.Connection`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import AppLoadError
from .connection import Connection
from .protocol import Call, encode_data, fit_text_args

__all__ = ["Rule", "RuleTable", "Writer", "resolve", "send_func"]

Handler = Callable[..., Any]


class Writer:
    """The ``writer`` an old-style handler gets: sends go to its client, in its call's form."""

    __slots__ = ("call", "conn")

    def __init__(self, conn: Connection, call: Call) -> None:
        self.conn = conn
        self.call = call

    async def send(self, text: str) -> None:
        await self.conn.send_text(encode_data(self.call, str(text)))

    # Some old handlers wrote through the writer object itself.
    send_str = send


async def send_func(writer: Writer, text: str) -> None:
    """The old ``send_func(writer, text)``: one text message to that client."""
    await writer.send(text)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    app: str
    handler: Handler
    connection_style: bool
    signature: inspect.Signature | None

    @classmethod
    def of(cls, name: str, app: str, handler: Handler) -> Rule:
        try:
            signature: inspect.Signature | None = inspect.signature(handler)
        except (TypeError, ValueError):  # builtins and some C callables have none
            signature = None
        return cls(name, app, handler, _is_connection_style(signature), signature)

    @property
    def arity(self) -> int | None:
        """Positional parameters a connection-style handler takes after ``conn``; None: any."""
        if not self.connection_style or self.signature is None:
            return None
        params = list(self.signature.parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
            return None
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return sum(p.kind in positional for p in params)

    def prepare(self, call: Call) -> Call | str:
        """``call`` with its arguments fitted to the handler, or why they cannot be passed.

        Text-form arguments of a connection-style handler are split only as
        far as it has parameters (``echo|a, b`` gives ``echo(conn, 'a, b')``);
        old-style handlers keep the original split.
        """
        if call.form == "text" and self.arity is not None:
            call = replace(call, args=fit_text_args(call.args, self.arity))
        if self.signature is None:
            return call
        try:
            if self.connection_style:
                self.signature.bind(None, *call.args)
            else:
                self.signature.bind(*call.args, send_func=send_func, writer=None)
        except TypeError as exc:
            return f"{self.name}: {exc}"
        return call

    def invoke(self, conn: Connection, call: Call) -> Any:
        """Call the handler for ``call``; returns what it returns (maybe an awaitable)."""
        if self.connection_style:
            return self.handler(conn, *call.args)
        return self.handler(*call.args, send_func=send_func, writer=Writer(conn, call))


def _is_connection_style(signature: inspect.Signature | None) -> bool:
    if signature is None:
        return False
    params = list(signature.parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return False
    first = params[0]
    annotation = first.annotation
    return first.name == "conn" or annotation is Connection or annotation == "Connection"


async def resolve(value: Any) -> Any:
    """Await ``value`` if a handler returned an awaitable (async or sync handlers both work)."""
    if inspect.isawaitable(value):
        return await value
    return value


class RuleTable(Mapping[str, Rule]):
    """All apps' ``ws_rules`` in one namespace; a name defined by two apps is an error."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}

    def add(self, app: str, rules: Mapping[str, Handler]) -> None:
        for name, handler in rules.items():
            if not isinstance(name, str) or not name or "|" in name:
                raise AppLoadError(
                    f"app {app!r}: ws_rules: expected rule names that are non-empty strings "
                    f"without '|', found {name!r}"
                )
            if not callable(handler):
                raise AppLoadError(
                    f"app {app!r}: ws_rules[{name!r}]: expected a callable, found {handler!r}"
                )
            existing = self._rules.get(name)
            if existing is not None:
                raise AppLoadError(
                    f"websocket rule {name!r} is defined by both app {existing.app!r} "
                    f"and app {app!r}"
                )
            self._rules[name] = Rule.of(name, app, handler)

    def __getitem__(self, name: str) -> Rule:
        return self._rules[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    @classmethod
    def from_dict(cls, rules: Mapping[str, Handler], app: str = "main") -> RuleTable:
        table = cls()
        table.add(app, rules)
        return table
