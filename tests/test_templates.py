"""Pages from ``apps/<name>/templates/`` (tranzit/templates.py), served on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import OLD_PROJECT, clean_env

from tranzit.errors import AppLoadError
from tranzit.testing import project_app, project_client

SECRET = "Zx0-vR8_qL2mN5pT7wY9aB1cD3eF4gH6iJ8kM0nP2rS"

ROUTES = """
import aiohttp_jinja2
from tranzit import web

class Page(web.TZView):
    @aiohttp_jinja2.template("{app}/index.html")
    async def get(self, request):
        return {{"who": request.query.get("who", "{app}")}}

async def named(request):
    name = request.match_info["name"]
    return aiohttp_jinja2.render_template(
        "{app}/" + name, request, {{"who": request.query.get("who", "")}}
    )

PATH_PREFIX = "/{app}"
routes = {{"/": Page, "/t/{{name}}": named}}
"""


def make_project(root: Path, apps: dict[str, dict[str, str]]) -> Path:
    """A project whose apps have ``ROUTES`` and the given ``templates/`` files."""
    (root / "apps").mkdir(parents=True)
    (root / "apps" / "__init__.py").write_text("")
    for app, templates in apps.items():
        folder = root / "apps" / app
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        (folder / "routes.py").write_text(textwrap.dedent(ROUTES.format(app=app)))
        for name, text in templates.items():
            (folder / "templates" / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "templates" / name).write_text(textwrap.dedent(text))
    (root / "server.yml").write_text("apps:\n" + "".join(f"  - {a}\n" for a in apps))
    return root


BASE = """\
<!DOCTYPE html>
<title>{% block title %}{% endblock %}</title>
<link rel="stylesheet" href="{{ static('shop/app.css') }}">
{% block body %}{% endblock %}
"""


async def test_each_app_has_its_own_templates_by_prefix(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "site",
        {
            "shop": {
                "base.html": BASE,
                "index.html": """\
                    {% extends "shop/base.html" %}
                    {% block title %}Shop{% endblock %}
                    {% block body %}<p>shop page for {{ who }}</p>{% endblock %}
                """,
            },
            "blog": {
                # Same file name as the shop's, and it extends the shop's layout by name.
                "index.html": """\
                    {% extends "shop/base.html" %}
                    {% block body %}<p>blog page for {{ who }}</p>{% endblock %}
                """,
            },
        },
    )
    async with project_client(project) as client:
        resp = await client.get("/shop/")
        assert resp.status == 200 and resp.content_type == "text/html"
        shop = await resp.text()
        assert "<title>Shop</title>" in shop and "<p>shop page for shop</p>" in shop
        assert '<link rel="stylesheet" href="/static/shop/app.css">' in shop
        blog = await (await client.get("/blog/")).text()
        assert "<p>blog page for blog</p>" in blog and "shop page" not in blog


async def test_html_is_escaped_and_plain_text_is_not(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "site",
        {"a": {"index.html": "<p>{{ who }}</p>", "note.txt": "note: {{ who }}"}},
    )
    async with project_client(project) as client:
        html = await (await client.get("/a/", params={"who": "<script>x</script>"})).text()
        assert html == "<p>&lt;script&gt;x&lt;/script&gt;</p>"
        text = await (await client.get("/a/t/note.txt", params={"who": "<b>"})).text()
        assert text == "note: <b>"


async def test_static_follows_the_static_url_setting(tmp_path: Path) -> None:
    project = make_project(tmp_path / "site", {"shop": {"base.html": BASE, "index.html": BASE}})
    async with project_client(project, static_url="/assets") as client:
        page = await (await client.get("/shop/")).text()
        assert 'href="/assets/shop/app.css"' in page


def test_a_project_without_templates_never_imports_jinja2() -> None:
    code = (
        "import sys\n"
        "from tranzit.testing import project_app\n"
        f"project_app({str(OLD_PROJECT)!r})\n"
        "print('jinja2' in sys.modules, 'aiohttp_jinja2' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "False False", result.stderr


def test_template_setup_only_where_a_templates_folder_exists(tmp_path: Path) -> None:
    import aiohttp_jinja2

    plain = make_project(tmp_path / "plain", {"a": {}})
    assert aiohttp_jinja2.APP_KEY not in project_app(plain)
    with_templates = make_project(tmp_path / "t", {"a": {"index.html": "x"}})
    assert aiohttp_jinja2.APP_KEY in project_app(with_templates)


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        (
            {"index.html": "<p>\n{{ who }\n</p>"},
            "apps/a/templates/index.html:2: template syntax error: unexpected '}'",
        ),
        (
            {"index.html": "{% if x %}\n<p>\n"},
            "apps/a/templates/index.html:1: template syntax error: Unexpected end of template",
        ),
        (
            {"index.html": "<p>\n{% extends 'a/bse.html' %}", "base.html": ""},
            "apps/a/templates/index.html:2: template 'a/bse.html' not found "
            "(a template is named '<app>/<file>' for apps/<app>/templates/<file>)",
        ),
        (
            {"index.html": "{% include 'base.html' %}", "base.html": ""},
            "apps/a/templates/index.html:1: template 'base.html' not found",
        ),
    ],
    ids=["syntax", "unclosed", "extends-missing", "include-without-prefix"],
)
def test_broken_template_stops_the_start_in_one_line(
    tmp_path: Path, templates: dict[str, str], message: str
) -> None:
    project = make_project(tmp_path / "site", {"a": templates})
    with pytest.raises(AppLoadError) as info:
        project_app(project)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)

    # What the user sees from the CLI: the same line, exit 2, no traceback.
    result = subprocess.run(
        [sys.executable, "-m", "tranzit", "check", "--project", str(project)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("tranzit: " + message), result.stderr
    assert "Traceback" not in result.stderr


def _no_id(line: str) -> str:
    """A log line with its error id (``[3f2a9c1e]``) as ``[id]``."""
    return re.sub(r"\[[0-9a-f]{8}\]$", "[id]", line)


async def test_missing_template_in_a_view_is_a_500_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_project(tmp_path / "site", {"a": {"index.html": "ok"}})
    caplog.set_level(logging.INFO, logger="tranzit")
    async with project_client(project) as client:
        resp = await client.get("/a/t/nothere.html")
        assert resp.status == 500
        assert "'a/nothere.html' not found" in await resp.text()  # development: the reason
    lines = [_no_id(r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert lines == [
        "GET /a/t/nothere.html: template 'a/nothere.html' not found "
        "(a template is named '<app>/<file>' for apps/<app>/templates/<file>) [id]"
    ]
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.ERROR)


async def test_error_while_rendering_names_the_template_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_project(
        tmp_path / "site", {"a": {"div.html": "<p>\n{{ 1 // who|int }}\n</p>", "index.html": ""}}
    )
    async with project_client(project) as client:
        resp = await client.get("/a/t/div.html", params={"who": "0"})
        assert resp.status == 500
        resp = await client.get("/a/t/div.html", params={"who": "2"})
        assert resp.status == 200 and "0" in await resp.text()
    lines = [_no_id(r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert lines == [
        "GET /a/t/div.html: apps/a/templates/div.html:2: "
        "ZeroDivisionError: integer division or modulo by zero [id]"
    ]


async def test_production_500_does_not_show_the_reason(tmp_path: Path) -> None:
    project = make_project(tmp_path / "site", {"a": {"index.html": "ok"}})
    async with project_client(
        project, environ={"TRANZIT_PRODUCTION": "1", "TRANZIT_SECRET_KEY": SECRET}
    ) as client:
        resp = await client.get("/a/t/nothere.html")
        assert resp.status == 500
        text = await resp.text()
        assert "nothere" not in text
        # The id on the page is the one in the log line.
        assert re.fullmatch(r"500: Internal Server Error \[[0-9a-f]{8}\]\n", text), text


async def test_a_changed_template_is_read_again_in_development(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_project(tmp_path / "site", {"a": {"index.html": "first"}})
    page = project / "apps" / "a" / "templates" / "index.html"
    async with project_client(project) as client:
        assert await (await client.get("/a/")).text() == "first"
        page.write_text("second")
        _touch_later(page)
        assert await (await client.get("/a/")).text() == "second"
        # A mistake made while the server runs: a 500 and one line with the file and line.
        page.write_text("ok\n{% endif %}")
        _touch_later(page)
        assert (await client.get("/a/")).status == 500
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and lines[0].startswith(
        "GET /a/: apps/a/templates/index.html:2: template syntax error: "
    ), lines


def _touch_later(path: Path) -> None:
    """Move the file's mtime on: jinja2 compares whole seconds on some filesystems."""
    stat = path.stat()
    os.utime(path, (stat.st_atime + 2, stat.st_mtime + 2))


async def test_static_html_pages_keep_working_beside_templates(tmp_path: Path) -> None:
    project = make_project(tmp_path / "site", {"a": {"index.html": "templated"}})
    (project / "apps" / "a" / "static").mkdir()
    (project / "apps" / "a" / "static" / "plain.html").write_text("<p>{{ not rendered }}</p>")
    async with project_client(project) as client:
        resp = await client.get("/static/a/plain.html")
        assert resp.status == 200 and await resp.text() == "<p>{{ not rendered }}</p>"
        assert await (await client.get("/a/")).text() == "templated"


def test_hidden_files_are_no_templates_and_other_bytes_are_refused(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "site", {"a": {"index.html": "ok", ".index.html.swp": "{% broken"}}
    )
    project_app(project)  # an editor's swap file is not parsed
    (project / "apps" / "a" / "templates" / "logo.html").write_bytes(b"\xff\xfe<p>")
    with pytest.raises(AppLoadError, match=r"^apps/a/templates/logo.html: expected UTF-8 text$"):
        project_app(project)
