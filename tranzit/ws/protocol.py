"""The websocket rule protocol, without I/O.

Decoding turns one incoming text message into a :class:`Call` or a
:class:`Malformed`; encoding turns replies and errors back into text. The
dispatch decision (run a rule, or answer with an error right away) is
:func:`plan`, and every refusal is decided there. Nothing here touches a
socket, so it is tested by feeding it strings. The wire format is documented
in ``docs/protocol.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, NoReturn, Protocol

from ..limits import JSON_MAX_DEPTH

__all__ = [
    "BAD_ARGUMENTS",
    "BINARY_UNSUPPORTED",
    "HANDLER_ERROR",
    "MALFORMED",
    "TOO_MANY_TASKS",
    "UNKNOWN_RULE",
    "Call",
    "Fits",
    "Form",
    "Malformed",
    "Refuse",
    "decode",
    "dumps",
    "encode_data",
    "encode_error",
    "encode_result",
    "fit_text_args",
    "plan",
]

Form = Literal["text", "json"]
CallId = str | int | None

MALFORMED: Final = "malformed"
UNKNOWN_RULE: Final = "unknown_rule"
BAD_ARGUMENTS: Final = "bad_arguments"
HANDLER_ERROR: Final = "handler_error"
TOO_MANY_TASKS: Final = "too_many_tasks"
BINARY_UNSUPPORTED: Final = "binary_unsupported"


class Call(NamedTuple):
    """A request to run ``rule`` with ``args``; replies go back in the same ``form``.

    A named tuple rather than a frozen dataclass: one is built per message, and
    a tuple is several times cheaper to make (``decode`` builds it with
    ``tuple.__new__``, without the generated ``__new__``'s defaults).
    """

    rule: str
    args: tuple[Any, ...]
    form: Form = "text"
    id: CallId = None


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message that is not a call; ``rule``/``id`` are kept when they could be read."""

    reason: str
    form: Form
    rule: str | None = None
    id: CallId = None


def decode(text: str) -> Call | Malformed:
    """Parse one text message: ``name|a,b`` or ``{"rule": ..., "args": [...], "id": ...}``."""
    if text.lstrip()[:1] == "{":
        return _decode_json(text)
    name, bar, rest = text.partition("|")
    if not bar:
        return Malformed("expected 'rule|arguments' or a JSON object", "text")
    if not name:
        return Malformed("empty rule name", "text")
    # The original split on ',' exactly and kept everything after the first '|'.
    return tuple.__new__(Call, (name, tuple(rest.split(",")), "text", None))


def _not_json(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


# One decoder and one encoder, made once: json.loads/dumps with options build a
# new one per call. NaN and Infinity are refused both ways (not JSON).
_decoder = json.JSONDecoder(parse_constant=_not_json)
# ensure_ascii=False keeps Cyrillic, CJK and emoji readable on the wire.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
_encode = _encoder.encode


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (iteratively: no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        deepest = max(deepest, level)
        stack.extend((c, level + 1) for c in children if isinstance(c, (list, dict)))
    return deepest


def _decode_json(text: str, max_depth: int = JSON_MAX_DEPTH) -> Call | Malformed:
    too_deep = f"arrays and objects nested deeper than {max_depth}"
    try:
        data = _decoder.decode(text)
    except RecursionError:  # nested deeper than the interpreter's stack allows
        return Malformed(too_deep, "json")
    except ValueError as exc:
        return Malformed(f"invalid JSON: {exc}", "json")
    if not isinstance(data, dict):
        return Malformed(f"expected a JSON object, found {type(data).__name__}", "json")
    call_id = data.get("id")
    if call_id is not None and (isinstance(call_id, bool) or not isinstance(call_id, (str, int))):
        return Malformed(
            f"expected 'id' to be a string or an integer, found {_short(call_id)}", "json"
        )
    rule = data.get("rule")
    if not isinstance(rule, str) or not rule:
        return Malformed(
            f"expected 'rule' to be a non-empty string, found {_short(rule)}", "json", id=call_id
        )
    args = data.get("args", [])
    if not isinstance(args, list):
        return Malformed(
            f"expected 'args' to be a list, found {type(args).__name__}", "json", rule, call_id
        )
    # Counting brackets is cheap, and a message with few cannot nest deeply.
    if text.count("[") + text.count("{") > max_depth and _depth(data) > max_depth:
        return Malformed(too_deep, "json", rule, call_id)
    unknown = sorted(set(data) - {"rule", "args", "id"})
    if unknown:
        return Malformed(f"unexpected keys: {_cut(', '.join(unknown))}", "json", rule, call_id)
    return tuple.__new__(Call, (rule, tuple(args), "json", call_id))


def fit_text_args(args: tuple[str, ...], arity: int) -> tuple[str, ...]:
    """Fit text-form arguments to a handler taking ``arity`` positional arguments.

    Surplus arguments are joined back into the last one (the text after the
    last expected comma is one argument), and ``name|`` means no arguments for
    a handler that takes none.
    """
    if arity == 0:
        return () if args == ("",) else args
    if len(args) > arity:
        return (*args[: arity - 1], ",".join(args[arity - 1 :]))
    return args


def encode_data(call: Call, text: str) -> str:
    """What ``send_func(writer, text)`` puts on the wire during ``call``."""
    if call.form == "text":
        return text
    return _encode({"id": call.id, "rule": call.rule, "data": text})


def encode_result(call: Call, value: Any) -> str | None:
    """The reply when a handler returns ``value``: ``rule|value``, a JSON result, or none.

    A text-form call that returns ``None`` gets no reply; a JSON call always
    gets its result (``null`` included), so the caller's promise settles.
    """
    if call.form == "json":
        return _encode({"id": call.id, "rule": call.rule, "result": value})
    if value is not None:
        return f"{call.rule}|{value}"
    return None


def encode_error(
    code: str, message: str, *, form: Form = "text", rule: str | None = None, id: CallId = None
) -> str:
    """An error reply: ``error|code,rule,message`` or a JSON object with ``error``."""
    if form == "json":
        return _encode({"id": id, "rule": rule, "error": {"code": code, "message": message}})
    return f"error|{code},{rule or ''},{message}"


def dumps(obj: Any) -> str:
    """``obj`` as the protocol writes JSON: compact, UTF-8, no NaN (ValueError)."""
    return _encoder.encode(obj)


def _short(value: Any) -> str:
    """``repr(value)``, cut short (error replies echo what the client sent)."""
    return _cut(repr(value))


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Fits(Protocol):
    """What :func:`plan` needs of a rule: its arguments fitted to it, or why they do not fit."""

    def fit(self, call: Call) -> Call | str: ...


@dataclass(frozen=True, slots=True)
class Refuse:
    """Decision: do not run anything; send ``reply`` (an encoded error)."""

    reply: str


def plan(text: str, rules: Mapping[str, Fits], running: int, max_tasks: int) -> Call | Refuse:
    """Decide what one incoming message does, given the rules and the calls running.

    Returns the call to run (its arguments fitted to ``rules[call.rule]``) or
    the refusal to send. ``running`` counts only calls that are still waiting
    on something: a call that answered at once is not running any more.
    """
    message = decode(text)
    if isinstance(message, Malformed):
        return Refuse(
            encode_error(
                MALFORMED, message.reason, form=message.form, rule=message.rule, id=message.id
            )
        )
    rule = rules.get(message.rule)
    if rule is None:
        return Refuse(_refusal(message, UNKNOWN_RULE, f"no rule named {_short(message.rule)}"))
    if running >= max_tasks:
        return Refuse(
            _refusal(
                message,
                TOO_MANY_TASKS,
                f"this connection already runs {running} handlers (limit {max_tasks})",
            )
        )
    fitted = rule.fit(message)
    if type(fitted) is str:
        return Refuse(_refusal(message, BAD_ARGUMENTS, fitted))
    return fitted  # type: ignore[return-value]


def _refusal(call: Call, code: str, message: str) -> str:
    return encode_error(code, message, form=call.form, rule=call.rule, id=call.id)
