"""What the {{ cookiecutter.first_app }} app serves: HTTP routes and websocket rules."""

from pathlib import Path

{% if cookiecutter.include_example == "yes" -%}
from .rules import clock, echo, join, leave, say
{% endif -%}
from .views import IndexView

# Prefixed to every path below ("" serves them at the site root).
PATH_PREFIX = ""
# Served at /static/{{ cookiecutter.first_app }}/.
APP_STATIC_DIR = str(Path(__file__).resolve().parent / "static")

routes = {
    "/": IndexView,
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
{%- else -%}
ws_rules = {}
{%- endif %}
