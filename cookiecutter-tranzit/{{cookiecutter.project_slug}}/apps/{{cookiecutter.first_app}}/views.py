"""HTTP views of the {{ cookiecutter.first_app }} app."""

from pathlib import Path

from tranzit import web

PAGES_DIR = Path(__file__).resolve().parent / "pages"


class IndexView(web.TZView):
    """The home page. Define post/put/delete too if the path should accept them."""

    async def get(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGES_DIR / "index.html")
