"""``tranzit.load``: a project directory in, its configuration and its apps out.

Every entry point starts here (``tranzit run|serve|check``, gunicorn's app,
``tranzit.testing``, the 2018 ``MainServer``): find the project and its
config file, read the config (``server.yml``, then ``TRANZIT_*``), import the
apps (2018-style websocket handlers are adapted as the rule table is built).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from .config import Config, load_config, locate_project, unknown_variables
from .project import Project, load_project

__all__ = ["load"]

log = logging.getLogger("tranzit")


def load(
    project_dir: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    required: bool = True,
    **overrides: Any,
) -> tuple[Config, Project]:
    """The project's :class:`Config` and :class:`Project`.

    ``project_dir`` and ``config_file`` default to ``TRANZIT_PROJECT_DIR`` /
    ``TRANZIT_CONFIG``, then the working directory and its ``server.yml``.
    ``environ`` replaces ``os.environ`` for those and the ``TRANZIT_*``
    settings; ``required=False`` lets a missing config file mean the defaults;
    ``overrides`` change settings (``ws_max_tasks=2``), validated like the
    file's. Raises :class:`~tranzit.errors.TranzitError` subclasses.
    """
    root, file = locate_project(project_dir, config_file, environ)
    config = load_config(file, environ, required=required)
    for warning in unknown_variables(environ):
        log.warning("%s", warning)
    if overrides:
        config = config.replace(**overrides)
    return config, load_project(root, config)
