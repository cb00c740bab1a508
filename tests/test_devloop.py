"""``tranzit run --reload`` as a developer uses it: edit a file, the server on the same
ports serves the new code; a broken edit is reported and the next one recovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import OLD_PROJECT, clean_env, free_port, wait_http

#: Bound for one restart: the change noticed (watchfiles groups changes for 50 ms
#: of quiet), the old server stopped, the new one importing the project.
RESTART = 20.0


class Reloader:
    def __init__(self, proc: subprocess.Popen[bytes], root: Path, http: int, log: Path) -> None:
        self.proc, self.root, self.http, self.log_path = proc, root, http, log

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def restarts(self) -> list[str]:
        return [line for line in self.log.splitlines() if line.endswith(": restarting")]

    def get(self, path: str = "/") -> tuple[int, str] | None:
        """Status and body, or None while nothing listens."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=2) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return None

    def edit(self, relative: str, change: Callable[[str], str]) -> None:
        file = self.root / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(change(file.read_text() if file.exists() else ""))


def wait_for(what: str, check: Callable[[], object], timeout: float = RESTART) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def members(group: int) -> list[int]:
    """The processes of a process group (the reloader and its server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == group:
            found.append(int(entry.name))
    return found


@contextmanager
def reloading(tmp_path: Path, *options: str, **settings: str) -> Iterator[Reloader]:
    """``tranzit run --reload`` on a copy of the contract's project, in its own process
    group (what a terminal's Ctrl-C reaches); ``settings`` as ``TRANZIT_*``."""
    root = tmp_path / "site"
    shutil.copytree(OLD_PROJECT, root, ignore=shutil.ignore_patterns("__pycache__"))
    http, ws = free_port(), free_port()
    env = clean_env(TRANZIT_HTTP_PORT=str(http), TRANZIT_WS_PORT=str(ws))
    env.update({f"TRANZIT_{k.upper()}": v for k, v in settings.items()})
    if "--port" in options:
        http = int(options[options.index("--port") + 1])
    log = tmp_path / "reload.log"
    argv = [sys.executable, "-m", "tranzit", "run", "--reload", "--project", str(root), *options]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_http(f"http://127.0.0.1:{http}/healthz", timeout=RESTART)
        yield Reloader(proc, root, http, log)
    finally:
        if proc.poll() is None or members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_a_code_change_is_served_on_the_same_port(tmp_path: Path) -> None:
    with reloading(tmp_path) as dev:
        assert "Hello from tranzit!" in (dev.get() or (0, ""))[1]
        dev.edit("apps/hello/views.py", lambda s: s.replace("Hello from tranzit!", "Hi again!"))
        wait_for("the new view", lambda: "Hi again!" in (dev.get() or (0, ""))[1])
        restarts = dev.restarts()
        assert len(restarts) == 1 and restarts[0].endswith(
            " apps/hello/views.py changed: restarting"
        )


def test_restart_lines_follow_log_format(tmp_path: Path) -> None:
    with reloading(tmp_path, log_format="json") as dev:
        dev.edit("apps/hello/views.py", lambda s: s.replace("Hello from tranzit!", "JSON!"))
        wait_for("the new view", lambda: "JSON!" in (dev.get() or (0, ""))[1])
    records = [json.loads(line) for line in dev.log.splitlines()]
    restarts = [r for r in records if r["message"].endswith("changed: restarting")]
    assert [(r["logger"], r["message"]) for r in restarts] == [
        ("tranzit", "apps/hello/views.py changed: restarting")
    ]


def test_a_broken_app_is_one_line_and_the_next_change_recovers(tmp_path: Path) -> None:
    with reloading(tmp_path) as dev:
        routes = (dev.root / "apps/hello/routes.py").read_text()
        dev.edit("apps/hello/routes.py", lambda s: s + "\nbroken = (\n")
        wait_for("the server's error", lambda: "tranzit: app 'hello'" in dev.log)
        errors = [line for line in dev.log.splitlines() if line.startswith("tranzit:")]
        assert len(errors) == 1 and "routes.py" in errors[0], dev.log
        assert "Traceback" not in dev.log
        assert dev.get("/healthz") is None and dev.proc.poll() is None  # the loop waits
        dev.edit("apps/hello/routes.py", lambda s: routes)
        wait_for("the repaired server", lambda: dev.get() is not None)
        assert "Hello from tranzit!" in (dev.get() or (0, ""))[1]
        assert len(dev.restarts()) == 2


def test_config_and_templates_restart_other_files_do_not(tmp_path: Path) -> None:
    with reloading(tmp_path) as dev:
        for ignored in (
            "node_modules/lib/index.py",
            ".venv/lib/site.py",
            "apps/hello/__pycache__/views.py",
            ".git/hooks/pre-commit.py",
            "notes.txt",
            "common/static/site.css",
        ):
            dev.edit(ignored, lambda s: s + "# edited\n")
        (dev.root / "apps/hello/templates").mkdir()  # a folder is no change of its own
        time.sleep(2.5)  # longer than watchfiles takes to report a change
        assert dev.restarts() == []
        for n, template in enumerate(
            ("apps/hello/static/camel.html", "apps/hello/templates/page.jinja2", "base.j2"), 1
        ):
            dev.edit(template, lambda s: s + "<!-- edited -->\n")
            wait_for(f"a restart for {template}", lambda n=n: len(dev.restarts()) == n)
            assert f" {template} changed: restarting" in dev.restarts()[-1]
        dev.edit("server.yml", lambda s: s + "static_url: /assets\n")
        wait_for("the new static_url", lambda: (dev.get("/assets/tranzit/tz.js") or (0,))[0] == 200)
        assert " server.yml changed: restarting" in dev.restarts()[-1]


@pytest.mark.parametrize("stop", ["SIGTERM to the reloader", "Ctrl-C to the group"])
def test_a_signal_stops_the_reloader_and_its_server(tmp_path: Path, stop: str) -> None:
    with reloading(tmp_path) as dev:
        assert len(members(dev.proc.pid)) == 2  # the reloader and the server
        if stop.startswith("SIGTERM"):
            dev.proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(dev.proc.pid, signal.SIGINT)
        assert dev.proc.wait(10) == 0
        wait_for("the server's exit", lambda: not members(dev.proc.pid), timeout=5)
        assert dev.get("/healthz") is None
        assert "Traceback" not in dev.log and "shutting down" in dev.log


def test_options_apply_to_the_restarted_server(tmp_path: Path) -> None:
    port = free_port()
    with reloading(tmp_path, "--port", str(port)) as dev:
        dev.edit("apps/hello/views.py", lambda s: s.replace("Hello from tranzit!", "Moved!"))
        wait_for("the new view", lambda: "Moved!" in (dev.get() or (0, ""))[1])


def test_a_bad_option_stops_before_the_loop(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tranzit", "run", "--reload", "-p", str(OLD_PROJECT), "--port", "0"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tranzit: --port: http_port: expected a port number from 1 to 65535, found '0'"
    ]
