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
from dataclasses import dataclass
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
    #: Positional parameters a connection-style handler takes after ``conn``; None: any.
    arity: int | None = None
    #: ``(fewest, most)`` arguments when a count decides whether they bind; else None.
    counts: tuple[int, int] | None = None

    @classmethod
    def of(cls, name: str, app: str, handler: Handler) -> Rule:
        try:
            signature: inspect.Signature | None = inspect.signature(handler)
        except (TypeError, ValueError):  # builtins and some C callables have none
            signature = None
        style = _is_connection_style(signature)
        return cls(
            name,
            app,
            handler,
            style,
            signature,
            _arity(signature, style),
            _counts(signature, style),
        )

    def prepare(self, call: Call) -> Call | str:
        """``call`` with its arguments fitted to the handler, or why they cannot be passed.

        Text-form arguments of a connection-style handler are split only as
        far as it has parameters (``echo|a, b`` gives ``echo(conn, 'a, b')``);
        old-style handlers keep the original split.
        """
        if call.form == "text" and self.arity is not None:
            args = fit_text_args(call.args, self.arity)
            if args is not call.args:
                call = Call(call.rule, args, call.form, call.id)
        if self.signature is None:
            return call
        # Per message: a count check where it decides, Signature.bind (slow) otherwise.
        if self.counts is not None and self.counts[0] <= len(call.args) <= self.counts[1]:
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


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _arity(signature: inspect.Signature | None, connection_style: bool) -> int | None:
    if not connection_style or signature is None:
        return None
    params = list(signature.parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in _POSITIONAL for p in params)


def _counts(signature: inspect.Signature | None, connection_style: bool) -> tuple[int, int] | None:
    """Bounds on the argument count that make ``bind`` succeed, for plain signatures.

    Only connection-style handlers whose parameters after ``conn`` are all
    positional (no ``*args``, no keyword-only, no ``**kwargs``): then a count
    between the required and the total number always binds.
    """
    if not connection_style or signature is None:
        return None
    params = list(signature.parameters.values())[1:]
    if any(p.kind not in _POSITIONAL for p in params):
        return None
    required = sum(p.default is inspect.Parameter.empty for p in params)
    return required, len(params)


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
