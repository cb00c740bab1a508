"""HTTP views of the {{ cookiecutter.first_app }} app.

Pages are templates in ``templates/``, named ``"{{ cookiecutter.first_app }}/<file>"``
(see tranzit's docs/templates.md).
"""
{%- if cookiecutter.include_example == "yes" %}

import re

import aiohttp_jinja2
import aiohttp_session
from tranzit import web

#: The session key the login stores the name under; routes.py's ws_connect reads it.
USER = "user"
MAX_NAME = 32
PAGE = "{{ cookiecutter.first_app }}/index.html"


def clean_name(text: str) -> str:
    """The name as the chat shows it: ',' and '|' would break its text messages."""
    return re.sub(r"[,|\s]+", " ", text).strip()[:MAX_NAME]


def page(request: web.Request, status: int = 200, **context: object) -> web.Response:
    return aiohttp_jinja2.render_template(PAGE, request, context, status=status)


class IndexView(web.TZView):
    """The home page: the login form, or, once logged in, the clock, echo and chat."""

    async def get(self, request: web.Request) -> web.StreamResponse:
        session = await aiohttp_session.get_session(request)
        return page(request, user=session.get(USER))


class LoginView(web.TZView):
    """Log in with a name only: an example of a session, not of authentication."""

    async def post(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name = clean_name(str(form.get("name", "")))
        if not name:
            return page(request, status=400, error="Type a name to log in.")
        # A new session (a new cookie), so a cookie planted before the login is not kept.
        session = await aiohttp_session.new_session(request)
        session[USER] = name
        # Relative: back to this app's page, whatever its PATH_PREFIX.
        raise web.HTTPSeeOther("./")


class LogoutView(web.TZView):
    async def post(self, request: web.Request) -> web.StreamResponse:
        session = await aiohttp_session.get_session(request)
        session.invalidate()
        raise web.HTTPSeeOther("./")
{%- else %}

import aiohttp_jinja2
from tranzit import web


class IndexView(web.TZView):
    """The home page. Define post/put/delete too if the path should accept them."""

    @aiohttp_jinja2.template("{{ cookiecutter.first_app }}/index.html")
    async def get(self, request: web.Request) -> dict[str, object]:
        return {}
{%- endif %}
