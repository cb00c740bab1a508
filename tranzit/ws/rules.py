"""The rule table shared by all apps, and the one way a handler is called.

A rule's handler is called ``handler(conn, *args)``: the connection first,
then the call's arguments. What it returns (or what its coroutine returns)
is the reply. Everything a call needs that does not change per message (the
arity that text arguments are fitted to, whether a count of arguments can
bind) is worked out once, when the table is built.

Handlers written for other conventions (the 2018 ``send_func``/``writer``
keywords, :mod:`tranzit.compat.handlers`) come in as :class:`Rule` subclasses
made by an ``adapt`` function given to :meth:`RuleTable.add`; this module
knows nothing of them.
"""

from __future__ import annotations

import dis
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AppLoadError
from .protocol import Call, encode_result, fit_text_args

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["Adapt", "Handler", "Rule", "RuleError", "RuleTable", "resolve"]

Handler = Callable[..., Any]


class RuleError(Exception):
    """Raised by a handler to answer its call with a deliberate error, without a traceback.

    ``raise RuleError("not your room", code="forbidden")`` sends
    ``error|forbidden,<rule>,not your room`` (or the JSON form's ``error``
    object). ``code`` is a short word: letters, digits, ``_``, ``-`` or ``.``.
    """

    def __init__(self, message: str, *, code: str = "rule_error") -> None:
        if not code or len(code) > 64 or not all(c.isalnum() or c in "_-." for c in code):
            raise ValueError(f"RuleError code: expected a short word, found {code!r}")
        super().__init__(message)
        self.message = str(message)
        self.code = code


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def signature_of(handler: Handler) -> inspect.Signature | None:
    try:
        return inspect.signature(handler)
    except (TypeError, ValueError):  # builtins and some C callables have none
        return None


# What a coroutine's own code must contain to suspend: await, async for, async with
# (3.10-3.13 compile them to these), or a yield.
_SUSPENDING_OPS = frozenset(
    {
        "GET_AWAITABLE",
        "GET_AITER",
        "GET_ANEXT",
        "BEFORE_ASYNC_WITH",
        "SETUP_ASYNC_WITH",
        "SEND",
        "YIELD_VALUE",
        "YIELD_FROM",
    }
)


def cannot_wait(handler: Handler) -> bool:
    """Whether a call of ``handler`` always finishes without waiting.

    True for a plain function, and for an ``async def`` whose own code has no
    ``await``, ``async for`` or ``async with``: its coroutine cannot suspend.
    False for anything else (callable objects, partials, generators), which
    may. A plain function may still return an awaitable; that is seen per call.
    """
    func = getattr(handler, "__func__", handler)  # bound methods
    code = getattr(func, "__code__", None)
    if code is None or not inspect.isfunction(func):
        return False
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR):
        return False
    if not code.co_flags & inspect.CO_COROUTINE:
        return True
    return not any(ins.opname in _SUSPENDING_OPS for ins in dis.get_instructions(code))


def count_bounds(params: list[inspect.Parameter]) -> tuple[int, int] | None:
    """``(fewest, most)`` positional arguments that always bind to ``params``.

    None when a count does not decide it (keyword-only parameters without a
    default); ``most`` is large for ``*args``.
    """
    if any(
        p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
        for p in params
    ):
        return None
    positional = [p for p in params if p.kind in _POSITIONAL]
    required = sum(p.default is inspect.Parameter.empty for p in positional)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return required, 1 << 30
    return required, len(positional)


class Rule:
    """One named handler of one app: how its arguments are fitted and how it is called."""

    __slots__ = (
        "_bounds",
        "_signature",
        "app",
        "arity",
        "calls",
        "handler",
        "inline",
        "name",
        "task_name",
    )

    def __init__(self, name: str, app: str, handler: Handler) -> None:
        self.name = name
        self.app = app
        self.handler = handler
        #: Tasks of this rule are named once, not per call.
        self.task_name = f"tranzit-rule-{name}"
        #: Calls dispatched to it (``/metrics``; a slot is the cheapest counter).
        self.calls = 0
        #: Calls run while the message is read, without a task: they cannot wait.
        self.inline = cannot_wait(handler)
        self._signature = signature_of(handler)
        params = self._after_conn(self._signature)
        #: Positional parameters after ``conn`` (text arguments are fitted to it); None: any.
        self.arity: int | None = None
        if self._signature is not None and not any(
            p.kind is inspect.Parameter.VAR_POSITIONAL for p in params
        ):
            self.arity = sum(p.kind in _POSITIONAL for p in params)
        self._bounds = count_bounds(params) if self._signature is not None else (0, 1 << 30)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of app {self.app!r}>"

    def _after_conn(self, signature: inspect.Signature | None) -> list[inspect.Parameter]:
        """The parameters left for the call's arguments once ``conn`` is passed."""
        if signature is None:
            return []
        params = list(signature.parameters.values())
        if params and params[0].kind in _POSITIONAL:
            return params[1:]
        if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
            return params  # ``*args`` takes the connection too
        raise AppLoadError(
            f"app {self.app!r}: ws_rules[{self.name!r}]: expected a handler that takes the "
            f"connection as its first argument, handler(conn, *args); found {signature}"
        )

    def fit(self, call: Call) -> Call | str:
        """``call`` with its arguments fitted to the handler, or why they cannot be passed.

        Text-form arguments are split only as far as the handler has
        parameters (``echo|a, b`` gives ``echo(conn, 'a, b')``).
        """
        args = call.args
        arity = self.arity
        if arity is not None and len(args) != arity and call.form == "text":
            args = fit_text_args(args, arity)
            if args is not call.args:
                call = call._replace(args=args)
        bounds = self._bounds
        if bounds is not None and bounds[0] <= len(args) <= bounds[1]:
            return call
        return self._bind_problem(call) or call

    def _bind_problem(self, call: Call) -> str | None:
        if self._signature is None:
            return None
        try:
            self._signature.bind(None, *call.args)
        except TypeError as exc:
            return f"{self.name}: {exc}"
        return None

    def invoke(self, conn: Connection, call: Call) -> Any:
        """Call the handler; returns what it returns (an awaitable for ``async def``)."""
        return self.handler(conn, *call.args)

    def reply(self, call: Call, value: Any) -> str | None:
        """The reply to send when the handler returned ``value`` (None: no reply)."""
        return encode_result(call, value)


#: Builds the rule of a handler written for another convention, or None for the usual one.
Adapt = Callable[[str, str, Handler], Rule | None]


async def resolve(value: Any) -> Any:
    """Await ``value`` if a handler returned an awaitable (async or sync handlers both work)."""
    if inspect.isawaitable(value):
        return await value
    return value


class RuleTable(Mapping[str, Rule]):
    """All apps' ``ws_rules`` in one namespace; a name defined by two apps is an error."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}

    def add(self, app: str, rules: Mapping[str, Handler], *, adapt: Adapt | None = None) -> None:
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
            adapted = adapt(name, app, handler) if adapt is not None else None
            self._rules[name] = adapted if adapted is not None else Rule(name, app, handler)

    def __getitem__(self, name: str) -> Rule:
        return self._rules[name]

    @property
    def by_name(self) -> dict[str, Rule]:
        """The rules as a plain dict (the dispatcher's per-message lookups)."""
        return self._rules

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    @classmethod
    def from_dict(
        cls, rules: Mapping[str, Handler], app: str = "main", *, adapt: Adapt | None = None
    ) -> RuleTable:
        table = cls()
        table.add(app, rules, adapt=adapt)
        return table
