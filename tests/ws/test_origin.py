"""The Origin decision of the websocket handshake (no I/O)."""

from __future__ import annotations

import pytest

from tranzit.ws.endpoint import origin_allowed


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "siblings", "ok"),
    [
        (None, "example.com", (), (), True),  # not a browser
        ("https://example.com", "example.com", (), (), True),
        ("http://127.0.0.1:3000", "127.0.0.1:3000", (), (), True),
        ("https://EXAMPLE.com", "example.com", (), (), True),
        ("https://evil.example", "example.com", (), (), False),
        ("http://127.0.0.1:3001", "127.0.0.1:3000", (), (), False),
        ("null", "example.com", (), (), False),
        ("https://app.example", "api.example", ("https://app.example",), (), True),
        ("https://app.example/", "api.example", ("https://app.example",), (), True),
        ("https://any.example", "api.example", ("*",), (), True),
        # the websocket port serves pages of the HTTP port on the same host name
        ("http://127.0.0.1:3000", "127.0.0.1:19719", (), (3000,), True),
        ("http://localhost:3000", "127.0.0.1:19719", (), (3000,), False),
        ("http://127.0.0.1:4000", "127.0.0.1:19719", (), (3000,), False),
        ("http://example.com", "example.com:19719", (), (80,), True),
        ("http://example.com:bad", "example.com:19719", (), (80,), False),
    ],
)
def test_origin_allowed(
    origin: str | None,
    host: str,
    allowed: tuple[str, ...],
    siblings: tuple[int, ...],
    ok: bool,
) -> None:
    assert origin_allowed(origin, host, frozenset(allowed), siblings) is ok
