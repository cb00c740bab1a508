"""The pages and static files, over real HTTP."""

import pytest


async def test_home_page(client):
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    # Rendered from apps/{{ cookiecutter.first_app }}/templates/index.html, with static URLs.
    assert '<link rel="stylesheet" href="/static/common/site.css">' in html
{%- if cookiecutter.include_example == "yes" %}
    # Before logging in: only the form (test_login.py logs in).
    assert 'id="login-form"' in html
{%- else %}
    assert "It works." in html
{%- endif %}


@pytest.mark.parametrize(
    "path",
    [
        "/static/common/site.css",
        "/static/common/favicon.png",
        "/static/{{ cookiecutter.first_app }}/app.css",
{%- if cookiecutter.include_example == "yes" %}
        "/static/{{ cookiecutter.first_app }}/app.js",
{%- endif %}
        "/static/tranzit/tz.js",
    ],
)
async def test_static_file(client, path):
    resp = await client.get(path)
    assert resp.status == 200
    assert await resp.read()


async def test_unknown_page_is_404(client):
    resp = await client.get("/no-such-page")
    assert resp.status == 404


async def test_health_check(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
