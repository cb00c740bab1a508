"""The pure protocol module, fed strings: decode, encode, and the dispatch decision."""

from __future__ import annotations

import json

import pytest

from tranzit.ws import protocol
from tranzit.ws.protocol import Call, Malformed, Refuse, decode, plan


class Takes:
    """A rule for plan(): arguments fit when there are at most ``most`` of them."""

    def __init__(self, most: int = 10) -> None:
        self.most = most

    def fit(self, call: Call) -> Call | str:
        return call if len(call.args) <= self.most else f"{call.rule}: too many arguments"


ECHO = {"echo": Takes()}


@pytest.mark.parametrize(
    ("text", "rule", "args"),
    [
        ("get_hello|", "get_hello", ("",)),  # the original gave one empty string
        ("name|a,b,c", "name", ("a", "b", "c")),
        ("name|a, b", "name", ("a", " b")),  # split on ',' exactly, no trimming
        ("name|a|b", "name", ("a|b",)),  # a later '|' stays in the last argument
        ("name|,", "name", ("", "")),
        ("чат|привет,世界,🙂", "чат", ("привет", "世界", "🙂")),
    ],
)
def test_text_form(text: str, rule: str, args: tuple[str, ...]) -> None:
    assert decode(text) == Call(rule, args, "text")


@pytest.mark.parametrize("text", ["", "no bar here", "|x", "   "])
def test_text_form_malformed(text: str) -> None:
    message = decode(text)
    assert isinstance(message, Malformed) and message.form == "text"


def test_json_form() -> None:
    assert decode('{"rule": "echo", "args": ["x", 2, null], "id": 7}') == Call(
        "echo", ("x", 2, None), "json", 7
    )
    assert decode(' {"rule": "ping"}') == Call("ping", (), "json", None)
    assert decode('{"rule": "r", "id": "abc"}') == Call("r", (), "json", "abc")


@pytest.mark.parametrize(
    ("text", "reason", "rule", "call_id"),
    [
        ("{not json", "invalid JSON", None, None),
        ('{"args": []}', "'rule' to be a non-empty string", None, None),
        ('{"rule": "", "id": 3}', "'rule' to be a non-empty string", None, 3),
        ('{"rule": "r", "args": "x", "id": 4}', "'args' to be a list", "r", 4),
        ('{"rule": "r", "id": [1]}', "'id' to be a string or an integer", None, None),
        ('{"rule": "r", "id": true}', "'id' to be a string or an integer", None, None),
        ('{"rule": "r", "extra": 1}', "unexpected keys: extra", "r", None),
    ],
)
def test_json_form_malformed(text: str, reason: str, rule: str | None, call_id: object) -> None:
    message = decode(text)
    assert isinstance(message, Malformed)
    assert reason in message.reason
    assert (message.form, message.rule, message.id) == ("json", rule, call_id)


def test_json_array_is_malformed_text() -> None:
    # '[' is not the JSON form's marker: it is a text message without '|'.
    assert isinstance(decode("[1,2]"), Malformed)


def test_encode_data_and_result() -> None:
    text_call = Call("get_hello", ("",), "text")
    json_call = Call("get_hello", (), "json", 5)
    assert protocol.encode_data(text_call, "HELLO!") == "HELLO!"
    assert json.loads(protocol.encode_data(json_call, "HELLO!")) == {
        "id": 5,
        "rule": "get_hello",
        "data": "HELLO!",
    }
    assert protocol.encode_result(text_call, None) is None
    assert protocol.encode_result(text_call, "x") == "get_hello|x"
    assert json.loads(protocol.encode_result(json_call, [1]) or "") == {
        "id": 5,
        "rule": "get_hello",
        "result": [1],
    }
    assert json.loads(protocol.encode_result(json_call, None) or "")["result"] is None


def test_utf8_is_not_escaped() -> None:
    call = Call("echo", (), "json", 1)
    wire = protocol.encode_result(call, "привет 世界 🙂") or ""
    assert "привет 世界 🙂" in wire


def test_unserialisable_result_falls_back_to_str() -> None:
    wire = protocol.encode_result(Call("r", (), "json", 1), {1, 2})
    assert json.loads(wire or "")["result"] in ("{1, 2}", "{2, 1}")


def test_encode_error_both_forms() -> None:
    assert (
        protocol.encode_error("unknown_rule", "no rule named 'x'", rule="x")
        == "error|unknown_rule,x,no rule named 'x'"
    )
    assert protocol.encode_error("malformed", "bad") == "error|malformed,,bad"
    assert json.loads(
        protocol.encode_error("handler_error", "boom", form="json", rule="r", id="a")
    ) == {"id": "a", "rule": "r", "error": {"code": "handler_error", "message": "boom"}}


def test_plan_runs_known_rules() -> None:
    decision = plan("echo|x", ECHO, running=0, max_tasks=2)
    assert decision == Call("echo", ("x",), "text")
    assert type(decision) is Call


def test_plan_refuses_arguments_that_do_not_fit() -> None:
    decision = plan("echo|a,b", {"echo": Takes(1)}, running=0, max_tasks=2)
    assert decision == Refuse("error|bad_arguments,echo,echo: too many arguments")


@pytest.mark.parametrize(
    ("text", "running", "expected"),
    [
        ("nope|x", 0, "error|unknown_rule,nope,no rule named 'nope'"),
        ("garbage", 0, "error|malformed,,expected 'rule|arguments' or a JSON object"),
        ("echo|x", 2, "error|too_many_tasks,echo,this connection already runs 2 handlers"),
    ],
)
def test_plan_refuses_with_an_error_reply(text: str, running: int, expected: str) -> None:
    decision = plan(text, ECHO, running=running, max_tasks=2)
    assert isinstance(decision, Refuse)
    assert decision.reply.startswith(expected)


def test_plan_json_refusals_keep_the_id() -> None:
    decision = plan('{"rule": "nope", "id": 9}', ECHO, running=0, max_tasks=2)
    assert isinstance(decision, Refuse)
    reply = json.loads(decision.reply)
    assert reply["id"] == 9 and reply["rule"] == "nope"
    assert reply["error"]["code"] == "unknown_rule"
