"""What the {{ cookiecutter.first_app }} app serves: HTTP routes and websocket rules."""

from pathlib import Path

{% if cookiecutter.include_example == "yes" -%}
from tranzit.auth import session_identity

from .rules import clock, echo, join, leave, say
from .views import USER, IndexView, LoginView, LogoutView
{%- else -%}
from .views import IndexView
{%- endif %}

# Prefixed to every path below ("" serves them at the site root).
PATH_PREFIX = ""
# Served at /static/{{ cookiecutter.first_app }}/.
APP_STATIC_DIR = str(Path(__file__).resolve().parent / "static")

routes = {
    "/": IndexView,
{%- if cookiecutter.include_example == "yes" %}
    "/login": LoginView,
    "/logout": LogoutView,
{%- endif %}
}

# Websocket rules, called by "name|arg1,arg2" messages (see tz.js in the page).
{% if cookiecutter.include_example == "yes" -%}
ws_rules = {
    "clock": clock,
    "echo": echo,
    # The chat room of the page (groups: see tranzit's docs/groups.md).
    "join": join,
    "say": say,
    "leave": leave,
}

# Called with the upgrade request of every websocket (on /ws and on the websocket
# port): the name the login stored in the session becomes conn.user; without one
# the upgrade is refused with 401.
ws_connect = session_identity(USER)
{%- else -%}
ws_rules = {}
{%- endif %}
