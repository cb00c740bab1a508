"""HTTP views of the {{ cookiecutter.app_name }} app; pages are ``templates/``, named ``"{{ cookiecutter.app_name }}/<file>"``."""

import aiohttp_jinja2

from tranzit import web


class IndexView(web.TZView):
    """/{{ cookiecutter.app_name }}/: the app's page."""

    @aiohttp_jinja2.template("{{ cookiecutter.app_name }}/index.html")
    async def get(self, request: web.Request) -> dict[str, object]:
        return {}
