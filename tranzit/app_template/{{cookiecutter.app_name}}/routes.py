"""What the {{ cookiecutter.app_name }} app serves (added by `tranzit app {{ cookiecutter.app_name }}`)."""

from .rules import hello
from .views import IndexView

# Every path below is served under /{{ cookiecutter.app_name }}: "/" is /{{ cookiecutter.app_name }}/.
PATH_PREFIX = "/{{ cookiecutter.app_name }}"

routes = {
    "/": IndexView,
}

# Rule names are shared by every app of the project: this app's start with its name.
ws_rules = {
    "{{ cookiecutter.app_name }}_hello": hello,
}
