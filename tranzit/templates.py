"""Pages rendered with aiohttp-jinja2 from ``apps/<name>/templates/``.

Each app's folder is one prefix of a jinja2 ``PrefixLoader``: the template
``"hello/index.html"`` is ``apps/hello/templates/index.html``, so two apps may
both have an ``index.html`` and one app's template may extend another's by
that name. A view renders with ``aiohttp_jinja2.render_template(name, request,
context)`` or the ``@aiohttp_jinja2.template(name)`` decorator.

Every template is parsed at start-up: a syntax error, or an ``extends`` /
``include`` / ``import`` of a template that does not exist, stops the start in
one line with the file and the line. At request time a template error is one
log line with the template's file and line and a 500.

A project without any ``templates/`` folder gets none of this: jinja2 is not
even imported.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .config import Config
from .errors import AppLoadError, show_key
from .project import Project

if TYPE_CHECKING:
    import jinja2

__all__ = ["TEMPLATES_DIR", "setup_templates", "template_folders"]

log = logging.getLogger("tranzit")

#: An app's template folder, inside ``apps/<name>/``.
TEMPLATES_DIR = "templates"
#: What jinja2 escapes automatically: the HTML (and XML) templates.
AUTOESCAPE = ("html", "htm", "xml")
_NAMING = "a template is named '<app>/<file>' for apps/<app>/templates/<file>"


def template_folders(project: Project) -> dict[str, Path]:
    """``{app name: its templates folder}`` for the apps that have one, in the apps' order."""
    folders = {}
    for spec in project.apps:
        path = project.root / "apps" / spec.name / TEMPLATES_DIR
        if path.is_dir():
            folders[spec.name] = path
    return folders


def setup_templates(app: web.Application, project: Project, config: Config | None = None) -> None:
    """Set up aiohttp-jinja2 on ``app`` when any app has a ``templates/`` folder.

    ``static('hello/app.css')`` in a template is ``<static_url>/hello/app.css``.
    Templates are re-read when they change, except in production. Raises
    :class:`~tranzit.errors.AppLoadError` for a template that cannot be used.
    """
    folders = template_folders(project)
    if not folders:
        return
    import aiohttp_jinja2
    import jinja2

    config = config or Config()
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PrefixLoader(
            {name: jinja2.FileSystemLoader(path) for name, path in folders.items()}, delimiter="/"
        ),
        autoescape=jinja2.select_autoescape(AUTOESCAPE),
        auto_reload=not config.production,
    )
    app[aiohttp_jinja2.static_root_key] = config.static_url
    _check_all(env, project.root)
    app.middlewares.append(
        _error_middleware(project.root, tuple(folders.values()), production=config.production)
    )


def _shown(filename: str | None, root: Path) -> str:
    """A template's file as the user knows it: relative to the project."""
    if not filename:
        return "<template>"
    path = Path(filename)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _check_all(env: jinja2.Environment, root: Path) -> None:
    """Parse every template; check the names it extends, includes or imports exist."""
    import jinja2

    # Editors' swap and backup files are hidden; they are no templates.
    names = {
        name
        for name in env.list_templates()
        if not any(part.startswith(".") for part in name.split("/"))
    }
    for name in sorted(names):
        app, _, file = name.partition("/")
        filename = str(root / "apps" / app / TEMPLATES_DIR / file)
        try:
            source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            tree = env.parse(source, name, filename)
            env.compile(tree, name, filename)
        except UnicodeDecodeError:
            raise AppLoadError(f"{_shown(filename, root)}: expected UTF-8 text") from None
        except jinja2.TemplateSyntaxError as exc:
            raise AppLoadError(
                f"{_shown(exc.filename, root)}:{exc.lineno}: template syntax error: "
                f"{show_key(exc.message or '', 200)}"
            ) from None
        for line, used in _references(tree):
            if used not in names:
                raise AppLoadError(
                    f"{_shown(filename, root)}:{line}: template {used!r} not found ({_NAMING})"
                )


def _references(tree: Any) -> Iterator[tuple[int, str]]:
    """``(line, name)`` of each literal ``extends``/``include``/``import``/``from`` name."""
    from jinja2 import nodes

    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        if isinstance(node, nodes.Include) and node.ignore_missing:
            continue
        if isinstance(node.template, nodes.Const) and isinstance(node.template.value, str):
            yield node.lineno, node.template.value


def _template_frame(
    tb: TracebackType | None, root: Path, folders: tuple[Path, ...]
) -> tuple[str, int] | None:
    """The innermost frame that runs template code (jinja2 rewrites them to the template's
    file and line), as ``(file, line)``."""
    found = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if any(Path(filename).is_relative_to(folder) for folder in folders):
            found = (_shown(filename, root), tb.tb_lineno)
        tb = tb.tb_next
    return found


def _template_problem(exc: BaseException, root: Path, folders: tuple[Path, ...]) -> str | None:
    """One line about ``exc`` if it is a template's fault, else None."""
    import jinja2

    cause = exc.__cause__ if isinstance(exc, web.HTTPInternalServerError) else exc
    if isinstance(cause, jinja2.TemplateNotFound):
        # aiohttp-jinja2 turns a missing template into a 500 with the name in its text.
        return f"template {cause.name!r} not found ({_NAMING})"
    if isinstance(exc, web.HTTPException):
        return None
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return (
            f"{_shown(exc.filename, root)}:{exc.lineno}: template syntax error: "
            f"{show_key(exc.message or '', 200)}"
        )
    where = _template_frame(exc.__traceback__, root, folders)
    if where is None:
        return None
    return f"{where[0]}:{where[1]}: {type(exc).__name__}: {show_key(str(exc), 200)}"


def _error_middleware(root: Path, folders: tuple[Path, ...], *, production: bool) -> Any:
    @web.middleware
    async def template_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            problem = _template_problem(exc, root, folders)
            if problem is None:
                raise
            # As tranzit.app's error pages: an id in the log line and on the page.
            error_id = secrets.token_hex(4)
            log.error("%s %s: %s [%s]", request.method, request.path[:200], problem, error_id)
            log.debug("template error in %s %s", request.method, request.path, exc_info=True)
            text = "500: Internal Server Error" if production else f"500: {problem}"
            return web.Response(status=500, text=f"{text} [{error_id}]\n")

    return template_errors
