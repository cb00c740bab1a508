"""``python -m bench``: run the workloads, write JSON, markdown and plots."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import machine, proc, report
from .settings import FULL, QUICK, Settings
from .workloads import docker, http, recovery, scale, secure, soak, ws

WORKLOADS: dict[str, Callable[[Settings, Callable[[str], None]], dict[str, Any]]] = {
    "http_hello": lambda s, p: http.run(s, "hello", p),
    "http_echo": lambda s, p: http.run(s, "echo", p),
    "ws_echo": ws.run_echo,
    "fanout": ws.run_fanout,
    "soak": soak.run,
    "recovery": recovery.run,
    # The Docker workloads share one stack; lifecycle ends by stopping it, so it comes last.
    "static": docker.run_static,
    "tls": secure.run_tls,
    "postgres": secure.run_postgres,
    "broadcast": scale.run,
    "lifecycle": docker.run_lifecycle,
}
#: Comparisons of whole stacks (two projects' `up`, two nginx modes): a full run and
#: `--only` measure them; `--quick`, which checks the harness, leaves them out.
NOT_QUICK = ("tls", "postgres")
RESULTS = proc.ROOT / "bench" / "results"
DOCS = proc.ROOT / "docs" / "BENCHMARKS.md"
NOTES = proc.ROOT / "bench" / "notes.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME",
        help=f"run only these workloads (repeatable or comma separated): {', '.join(WORKLOADS)}",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds: checks the harness, not speed"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="directory for the JSON and plots (default bench/results, or bench/results/quick)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        help="markdown to write (default docs/BENCHMARKS.md for a full run of everything)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="only regenerate the markdown and plots from a results file",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="with --from-json: add the workloads of these results files (run separately)",
    )
    parser.add_argument(
        "--tranzit-path",
        help="directory put first on PYTHONPATH of tranzit's servers (an experimental copy)",
    )
    parser.add_argument(
        "--clients",
        help="broadcast sizes, comma separated; a trailing r raises nginx's worker_connections "
        "(default 900,2000,10000r; quick 20)",
    )
    parser.add_argument("--repeats", type=int, help="runs per peer (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    only = [name for item in args.only for name in item.split(",") if name]
    unknown = [n for n in only if n not in WORKLOADS]
    if unknown:
        print(
            f"bench: --only: expected one of {', '.join(WORKLOADS)}, found {', '.join(unknown)}",
            file=sys.stderr,
        )
        return 2
    partial = bool(only) or args.quick
    # Only a full run replaces the tracked results, plots and docs/BENCHMARKS.md.
    out = args.out or (
        RESULTS / "quick" if args.quick else RESULTS / "partial" if partial else RESULTS
    )
    docs = args.docs or (DOCS if not partial else out / "BENCHMARKS.md")

    if args.from_json:
        results = json.loads(args.from_json.read_text())
        for extra in args.merge:
            other = json.loads(extra.read_text())
            results["workloads"].update(other["workloads"])
            results.setdefault("merged_runs", []).append(other["run"])
            results["elapsed_seconds"] += other["elapsed_seconds"]
        if args.merge:
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"run-{time.strftime('%Y%m%d-%H%M%S')}-merged.json"
            path.write_text(json.dumps(results, indent=1) + "\n")
            (out / "latest.json").write_text(path.read_text())
            print(f"results: {path}")
    else:
        settings = QUICK if args.quick else FULL
        changes: dict[str, Any] = {"tranzit_path": args.tranzit_path}
        if args.repeats:
            changes["repeats"] = args.repeats
        if args.duration:
            changes["duration"] = args.duration
        if args.clients:
            changes["chat_sizes"] = tuple(
                (int(n.rstrip("r")), n.endswith("r")) for n in args.clients.split(",") if n
            )
        settings = dataclasses.replace(settings, **changes)
        try:
            default = [n for n in WORKLOADS if not (args.quick and n in NOT_QUICK)]
            results = run(settings, only or default, argv)
        except proc.BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nbench: interrupted; servers stopped", file=sys.stderr)
            return 130
        finally:
            proc.stop_all()
            docker.cleanup()
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = out / f"run-{stamp}{'-quick' if args.quick else ''}.json"
        path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
        (out / "latest.json").write_text(path.read_text())
        print(f"results: {path}")

    write_docs(results, docs, out)
    print(f"report:  {docs}")
    return 0


def write_docs(results: dict[str, Any], docs: Path, out: Path) -> None:
    docs.parent.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    try:
        plots = report.plot(results, out / "plots", docs.parent)
    except ImportError as exc:
        results["plots_skipped"] = f"matplotlib is not installed ({exc.name})"
    notes = NOTES.read_text() if NOTES.is_file() and not results["settings"]["quick"] else None
    docs.write_text(report.markdown(results, plots, notes))


def run(settings: Settings, names: list[str], argv: list[str]) -> dict[str, Any]:
    proc.install_cleanup()
    if not proc.pinning_available():
        print(
            "bench: warning: no taskset or fewer than 2 CPUs: servers and clients are not pinned",
            file=sys.stderr,
        )
    info = machine.describe(argv)
    info["loadavg_before"] = machine.loadavg()
    results: dict[str, Any] = {
        "run": info,
        "settings": dataclasses.asdict(settings),
        "workloads": {},
    }
    if not settings.quick and "static" in names:
        # wrk's load leaves the engine digesting the access log of the stack's nginx for
        # minutes (its writes to stdout then stall nginx): the other Docker workloads first.
        names = [n for n in names if n != "static"] + ["static"]
    began = time.monotonic()
    for i, name in enumerate(names, 1):
        t0 = time.monotonic()
        print(f"[{i}/{len(names)}] {name} …", flush=True)

        def progress(message: str, name: str = name) -> None:
            print(f"    {name}: {message}", flush=True)

        results["workloads"][name] = WORKLOADS[name](settings, progress)
        print(f"[{i}/{len(names)}] {name} done in {time.monotonic() - t0:.1f} s", flush=True)
    info["loadavg_after"] = machine.loadavg()
    results["elapsed_seconds"] = time.monotonic() - began
    return results
