"""The Docker workloads (static files through nginx, container lifecycle).

They need the compose stack of issue 5; this harness does not drive it yet,
so a run records them as not measured, with the reason.
"""

from __future__ import annotations

from typing import Any

from .. import proc

REASON = (
    "the harness does not drive the compose stack yet (issue 5's `docker/` and "
    "`scripts/docker-env.sh` were still being built while this harness was written)"
)


def not_measured(name: str) -> dict[str, Any]:
    usable = (proc.ROOT / "docker").is_dir() and (proc.ROOT / "scripts" / "docker-env.sh").is_file()
    detail = "" if usable else "; the Docker files are not in this checkout"
    return {"status": "not measured", "reason": REASON + detail, "workload": name}
