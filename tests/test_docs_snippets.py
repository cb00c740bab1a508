"""The code shown in README.md and docs/tzjs.md, pasted into projects and run in Chromium.

Each snippet is taken from the document as it stands, so an example that stops
working (a rule whose replies ``tz.on`` never sees, a missing import) fails here.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import CHROMIUM, browser_page, running

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt package 'chromium')"
    ),
]


def blocks(doc: str, language: str) -> list[str]:
    text = (REPO / doc).read_text(encoding="utf-8")
    return [
        body for lang, body in re.findall(r"```(\w+)\n(.*?)```", text, re.S) if lang == language
    ]


def the_block(doc: str, language: str, containing: str) -> str:
    found = [b for b in blocks(doc, language) if containing in b]
    assert len(found) == 1, f"{doc}: expected one {language} block with {containing!r}"
    return found[0]


def make_app(root: Path, app: str, files: dict[str, str]) -> Path:
    (root / "apps" / app).mkdir(parents=True)
    (root / "apps" / "__init__.py").write_text("")
    (root / "apps" / app / "__init__.py").write_text("")
    for name, text in files.items():
        path = root / "apps" / app / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "server.yml").write_text(f"apps:\n  - {app}\n")
    return root


def console_of(page: Any) -> list[str]:
    lines: list[str] = []
    page.on("console", lambda msg: lines.append(msg.text))
    return lines


def wait_until(
    check: Callable[[], bool],
    page: Any,
    what: str,
    timeout: float = 10.0,
    extra: Callable[[], object] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s: {what}; {extra()}")
        page.wait_for_timeout(100)


def serve(project: Path) -> Any:
    return running([sys.executable, "-m", "tranzit", "run", "--project", str(project)])


def test_readme_tour_app_works_as_pasted(tmp_path: Path) -> None:
    project = make_app(
        tmp_path / "tour",
        "hello",
        {
            "routes.py": the_block("README.md", "python", "ws_rules = {"),
            "views.py": the_block("README.md", "python", "class IndexView"),
            "templates/index.html": the_block("README.md", "html", "new TZ()"),
        },
    )
    with serve(project) as (_, http, _ws), browser_page() as (page, errors):
        page.goto(f"http://127.0.0.1:{http}/")
        out = page.locator("#out")
        wait_until(lambda: "HELLO!" in (out.text_content() or ""), page, "HELLO! in the page")
        wait_until(lambda: "echo: hi" in (out.text_content() or ""), page, "the echo reply")
        assert errors == []


def test_tzjs_examples_work_as_pasted(tmp_path: Path) -> None:
    rules = the_block("docs/tzjs.md", "python", "async def count")
    first = the_block("docs/tzjs.md", "html", "new TZ()")
    calls = the_block("docs/tzjs.md", "js", "tz.call('count', 3)")
    old = the_block("docs/tzjs.md", "js", "new TZ('ws://'")
    project = make_app(
        tmp_path / "tzdoc",
        "tzdoc",
        {
            "rules.py": rules,
            "routes.py": (
                "from .rules import count, echo, get_hello\n\n"
                "ws_rules = {'get_hello': get_hello, 'echo': echo, 'count': count}\n"
            ),
            # The first example (a fragment: the page around it says UTF-8), then the
            # one with a call that has progress messages.
            "static/first.html": f'<meta charset="utf-8">\n{first}<script>\n{calls}</script>\n',
        },
    )
    with serve(project) as (_, http, ws_port):
        # The old API names the standalone websocket port, 19719 by default: here a free one.
        old_page = old.replace(":19719", f":{ws_port}")
        (project / "apps" / "tzdoc" / "static" / "old.html").write_text(
            f'<script src="/static/tranzit/tz.js"></script>\n<script>\n{old_page}</script>\n'
        )
        with browser_page() as (page, errors):
            lines = console_of(page)
            page.goto(f"http://127.0.0.1:{http}/static/tzdoc/first.html")
            for expected in ("HELLO!", "Привет 世界 🚀", "progress 3", "finished done"):
                wait_until(
                    lambda e=expected: e in lines,
                    page,
                    f"console line {expected!r}",
                    extra=lambda: lines,
                )
            assert lines.index("progress 1") < lines.index("finished done")

            lines.clear()
            page.goto(f"http://127.0.0.1:{http}/static/tzdoc/old.html")
            wait_until(lambda: "HELLO!" in lines, page, "HELLO! over the websocket port")
            assert errors == []
