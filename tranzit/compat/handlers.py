"""Rules written for the 2018 calling convention, adapted to the one the core knows.

The 2018 server called ``handler(*args, send_func=send_func, writer=writer)``
and ignored what the handler returned; the handler answered by awaiting
``send_func(writer, text)``. The rule, in one sentence: **a handler that can
take the keywords ``send_func`` and ``writer`` (it names both, or has
``**kwargs``) is called that way; any other is called ``handler(conn, *args)``.**
What a parameter is called decides nothing else: ``async def echo(client,
text)`` is a connection-first handler.

The project loader passes :func:`adapt` to
:meth:`~tranzit.ws.rules.RuleTable.add`; the websocket core never imports
this module.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..ws.connection import Connection
from ..ws.protocol import Call, encode_data, encode_result
from ..ws.rules import Handler, Rule, signature_of

__all__ = ["LegacyRule", "Writer", "adapt", "send_func", "takes_2018_keywords"]

_KEYWORDS = frozenset({"send_func", "writer"})


class Writer:
    """The ``writer`` a 2018 handler gets: sends go to its client, in its call's form."""

    __slots__ = ("_out", "call", "conn")

    def __init__(self, conn: Connection, call: Call) -> None:
        self.conn = conn
        self.call = call
        self._out = conn.outbound

    async def send(self, text: str) -> None:
        await send_func(self, text)

    # Some old handlers wrote through the writer object itself.
    send_str = send


async def send_func(writer: Writer, text: str) -> None:
    """The 2018 ``send_func(writer, text)``: one text message to that client.

    Straight onto the connection's outbound path (what ``conn.send_text``
    does), one coroutine per send: every reply of a 2018 handler comes here.
    """
    call = writer.call
    if type(text) is not str:
        text = str(text)
    waiter = writer._out.write(text if call.form == "text" else encode_data(call, text))
    if waiter is not None:
        await waiter


def takes_2018_keywords(signature: inspect.Signature | None) -> bool:
    """Whether a handler can be called with ``send_func=`` and ``writer=``."""
    if signature is None:
        return False
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return True
    named = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return named >= _KEYWORDS


class LegacyRule(Rule):
    """A 2018 handler: arguments as the original split them, keywords in, return ignored."""

    __slots__ = ()

    def __init__(self, name: str, app: str, handler: Handler) -> None:
        super().__init__(name, app, handler)
        self.arity = None  # the original split is kept as it is
        self.inline = False  # it answers through send_func: a coroutine it awaits

    def _after_conn(self, signature: inspect.Signature | None) -> list[inspect.Parameter]:
        # No connection first; send_func and writer come as keywords.
        if signature is None:
            return []
        return [
            p
            for p in signature.parameters.values()
            if p.name not in _KEYWORDS and p.kind is not inspect.Parameter.VAR_KEYWORD
        ]

    def _bind_problem(self, call: Call) -> str | None:
        # The original split is kept (arity None: Rule.fit fits nothing); the
        # arguments must bind beside the two keywords.
        if self._signature is None:
            return None
        try:
            self._signature.bind(*call.args, send_func=send_func, writer=None)
        except TypeError as exc:
            return f"{self.name}: {exc}"
        return None

    def invoke(self, conn: Connection, call: Call) -> Any:
        return self.handler(*call.args, send_func=send_func, writer=Writer(conn, call))

    def reply(self, call: Call, value: Any) -> str | None:
        # A 2018 handler's return value never reached a text client; a JSON call
        # (a newer tz.js) still gets its result, so its promise settles.
        return encode_result(call, value) if call.form == "json" else None


def adapt(name: str, app: str, handler: Handler) -> Rule | None:
    """The :class:`LegacyRule` of a 2018 handler; None for a connection-first one."""
    if takes_2018_keywords(signature_of(handler)):
        return LegacyRule(name, app, handler)
    return None
