"""docs/BENCHMARKS.md and its plots, from the JSON of one run."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .targets import DASH, TIMES, checks

TITLES = {
    "http_hello": "HTTP hello (a class view), gunicorn, 1 worker, wrk -c64",
    "http_echo": "HTTP JSON echo with a user middleware, wrk -c64",
    "ws_echo": "Websocket routed echo (`echo|text`), pipelined",
    "fanout": "Fan-out: idle connections, one broadcast",
    "static": "Static file through the compose stack's nginx",
    "lifecycle": "Container lifecycle",
    "broadcast": "Broadcast across 3 ws replicas through Redis",
    "soak": "Soak: bad clients and Redis restarts",
    "recovery": "Recovery: a replica killed, a rolling restart, idle v2 memory",
    "tls": "nginx over HTTPS against plain HTTP (the same stack, one run)",
    "postgres": "`compose up --wait` with and without the Postgres option",
}
UNITS = {"http_hello": "req/s", "http_echo": "req/s", "ws_echo": "msg/s"}


def _f(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return f"{x:,.{digits}f}"


def _saturation(cpu: dict[str, float]) -> str:
    busy = [side for side in ("server", "client") if cpu.get(side, 0) >= 90]
    return " and ".join(busy) if busy else "neither"


def _steal(runs: list[dict[str, Any]]) -> str:
    """Median steal of the two cores over the runs (time the VM's neighbours took)."""

    def med(key: str) -> float | None:
        values = sorted(r["cpu_percent"][key] for r in runs if key in r.get("cpu_percent", {}))
        return values[len(values) // 2] if values else None

    return f"{_f(med('server_core_steal'), 0)} / {_f(med('client_core_steal'), 0)}"


def _rate_table(name: str, data: dict[str, Any]) -> list[str]:
    unit = UNITS[name]
    peers = data["peers"]
    base = peers["tranzit"]["rate"]
    lines = [
        f"| peer | {unit} (median) | runs | vs tranzit | latency p50 ms | p99 ms "
        "| server CPU % | client CPU % | at ≥ 90 % CPU | steal % server/client core |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for peer, p in peers.items():
        runs = ", ".join(f"{r.get('rps', r.get('rate')):,.0f}" for r in p["runs"])
        ratio = _f(base / p["rate"] if p["rate"] else None)
        lines.append(
            f"| {peer} | {_f(p['rate'], 0)} | {runs} | {ratio}{TIMES} "
            f"| {_f(p['latency_ms']['50'])} | {_f(p['latency_ms']['99'])} "
            f"| {_f(p['cpu_percent']['server'], 0)} | {_f(p['cpu_percent']['client'], 0)} "
            f"| {_saturation(p['cpu_percent'])} | {_steal(p['runs'])} |"
        )
    if any(p.get("errors") for p in peers.values()):
        lines.append("")
        lines.append(
            "Errors (non-2xx or socket errors): "
            + ", ".join(f"{k}: {p['errors']}" for k, p in peers.items())
        )
    return lines


def _fanout_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| connections | peer | RSS delta per connection KiB | broadcast p50 ms | p99 ms "
        "| server broadcast call ms | connect s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in data["sizes"]:
        for peer, table in data["peers"].items():
            row = table.get(str(n))
            if row is None:
                continue
            connect = sorted(r["connect_seconds"] for r in row["runs"])[len(row["runs"]) // 2]
            lines.append(
                f"| {n:,} | {peer} | {_f(row['kib_per_connection'], 1)} | {_f(row['p50_ms'])} "
                f"| {_f(row['p99_ms'])} | {_f(row['server_loop_ms'])} | {_f(connect, 1)} |"
            )
    if data.get("skipped_sizes"):
        lines += [
            "",
            f"Skipped sizes {data['skipped_sizes']}: open-files limit {data['nofile_limit']}.",
        ]
    return lines


FANOUT_TEXT = [
    "The bench project's `broadcast` rule calls `await conn.hub.broadcast(text)`, the API a",
    "user calls: it hands the text to every client's one outbound path, written at once when",
    "nothing waits for that client and queued (bounded) behind what does otherwise, so one",
    "slow client delays nobody. The raw aiohttp",
    "peer loops over its set of `WebSocketResponse`s awaiting `send_str` (one slow client",
    "stalls the loop). Latency: from the trigger's send to each idle connection's receive, in",
    "the one client process (which receives every message itself, so the client's own work",
    "is part of p99). Server broadcast call: timed inside the server (tranzit: the",
    "`hub.broadcast` call; raw aiohttp: its send loop). RSS: the server's resident memory",
    "after the connections settled, or after the broadcasts if higher, minus before them,",
    "divided by their number. tranzit",
    "serves with its default `ws_heartbeat` (20 s); the raw peer has none.",
]


def _not_measured(data: dict[str, Any]) -> list[str] | None:
    if data.get("status") == "not measured":
        return [f"Not measured in this run: {data['reason']}"]
    return None


def _lifecycle(data: dict[str, Any]) -> list[str]:
    skipped = _not_measured(data)
    if skipped:
        return skipped
    kind = "cold (`--no-cache`)" if data["cold_build"] else "with the layer cache (not cold)"
    lines = ["| measured | value |", "|---|---:|"]
    for name, mb in data["image_mb"].items():
        lines.append(f"| {name} size | {mb:,.0f} MB |")
    if "runtime_over_base_mb" in data:
        over, base = data["runtime_over_base_mb"], data["python_base"]
        lines.append(f"| runtime image over its Python base (`{base}`) | {over:.1f} MB |")
    for name, seconds in data["builds"].items():
        lines.append(f"| build of {name}, {kind} | {seconds:,.1f} s |")
    stop = data["stop"]
    restarts = ", ".join(f"{x:.2f}" for x in data["restart_runs"])
    lines += [
        f"| `compose up -d --wait` ({data['stack']}) | {data['up_wait_seconds']:.1f} s |",
        f"| first `GET /` through nginx after `up --wait` returned "
        f"| {1000 * data['first_request_seconds']:.0f} ms |",
        f"| first 200 after `compose restart web` returned (median of {restarts} s) "
        f"| {data['serving_after_restart_seconds']:.2f} s |",
        f"| `compose stop ws` with {stop['websockets']} open websockets "
        f"| {stop['stop_seconds']:.2f} s |",
        f"| ... until the last of them was closed | {stop['all_closed_seconds']:.2f} s |",
        f"| close codes the clients saw | {stop['close_codes']} |",
        "",
        "Image sizes are `docker image inspect`'s uncompressed size. The builds are tranzit's",
        "images from docker/ (offline base images and wheelhouse of scripts/docker-env.sh) and",
        "the generated project's two images built on them.",
    ]
    return lines


def _static(data: dict[str, Any]) -> list[str]:
    skipped = _not_measured(data)
    if skipped:
        return skipped
    lines = [
        "| file | peer | req/s (median) | runs | vs bare | p50 ms | p99 ms | nginx CPU % "
        "| wrk CPU % | at ≥ 90 % CPU |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, f in data["files"].items():
        peers = f["peers"]
        base = peers["bare nginx"]["rate"]
        for peer, p in peers.items():
            runs = ", ".join(f"{r['rps']:,.0f}" for r in p["runs"])
            lines.append(
                f"| {label} | {peer} | {_f(p['rate'], 0)} | {runs} | {_f(p['rate'] / base)}{TIMES} "
                f"| {_f(p['latency_ms']['50'])} | {_f(p['latency_ms']['99'])} "
                f"| {_f(p['cpu_percent']['server'], 0)} | {_f(p['cpu_percent']['client'], 0)} "
                f"| {_saturation(p['cpu_percent'])} |"
            )
    versions = "; ".join(f"{k}: {v}" for k, v in data["versions"].items())
    lines += [
        "",
        f"`wrk -t1 -c{data['connections']}` on the client core against each container's own",
        "address (not the published port, whose userland proxy would be measured too); both",
        "nginx containers pinned to the server core (`docker update --cpuset-cpus`). The stack's",
        "nginx is the generated project's image (tranzit's config: `try_files`, dot-file guard,",
        "`Cache-Control`, no access log for /static/, gzip for text types but wrk asks for",
        f"none). The bare side is {data['bare']}. Versions: {versions}.",
    ]
    return lines


def _tls(data: dict[str, Any]) -> list[str]:
    skipped = _not_measured(data)
    if skipped:
        return skipped
    lines = [
        "| target | side | req/s (median) | runs | https/http | p50 ms | p99 ms | nginx CPU % "
        "| wrk CPU % | at ≥ 90 % CPU |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for target, t in data["targets"].items():
        for side, p in t["sides"].items():
            runs = ", ".join(f"{r['rps']:,.0f}" for r in p["runs"])
            ratio = _f(t["https_vs_http"]) + TIMES if side == "https" else ""
            lines.append(
                f"| {target} | {side} | {_f(p['rate'], 0)} | {runs} | {ratio} "
                f"| {_f(p['latency_ms']['50'])} | {_f(p['latency_ms']['99'])} "
                f"| {_f(p['cpu_percent']['server'], 0)} | {_f(p['cpu_percent']['client'], 0)} "
                f"| {_saturation(p['cpu_percent'])} |"
            )
    ups = data["up_wait_seconds"]
    lines += [
        "",
        f"`wrk -t1 -c{data['connections']}` on the client core against each nginx container's own",
        "address, nginx pinned to the server core; the two stacks run the same images, one with",
        "`TRANZIT_TLS=off`, one with `self-signed` (EC P-256, TLS 1.3 negotiated, HTTP/1.1: wrk",
        'speaks no HTTP/2). "new connection per request" sends `Connection: close`, so each',
        "request pays a TCP and (over HTTPS) a full TLS handshake. The page goes nginx → web",
        f"(gunicorn, 1 worker) and is bounded by web, not nginx. {data['nginx']}.",
        f"`up --wait`: {_f(ups['http'], 1)} s plain, {_f(ups['https'], 1)} s with HTTPS (the",
        "certificate made on this first start).",
    ]
    return lines


def _postgres(data: dict[str, Any]) -> list[str]:
    skipped = _not_measured(data)
    if skipped:
        return skipped
    lines = [
        "| project | first `up --wait` (new volumes) s | `up --wait` after `down` s (runs) |",
        "|---|---:|---|",
    ]
    for label, t in data["up_wait_seconds"].items():
        again = ", ".join(_f(x, 1) for x in t["again"])
        lines.append(f"| {label} | {_f(t['first'], 1)} | {again} |")
    lines += [
        "",
        "The same template with `database=none` and `database=postgres`, both `TRANZIT_TLS=off`.",
        "With Postgres, `up --wait` returns when db is healthy, `migrate` has exited 0 and",
        "web, ws and nginx are healthy (compose starts web and ws only after `migrate`); the",
        "first start also runs initdb into the new volume. `down` keeps the volumes.",
    ]
    return lines


def _busy(cores: dict[str, float] | None) -> str:
    """``ws 1.2, nginx 0.3, ...``: the cores each part kept busy (the machine has 2)."""
    if not cores:
        return ""
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(cores.items(), key=lambda kv: -kv[1]))


def _broadcast(data: dict[str, Any], fanout: dict[str, Any] | None) -> list[str]:
    skipped = _not_measured(data)
    if skipped:
        return skipped
    lines = [
        "| clients | nginx worker_connections | per replica | joined in s | p50 ms | p99 ms "
        "| deliveries/s | burst | missing | cores busy in the burst |",
        "|---:|---:|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in data["runs"]:
        stock = data.get("nginx_worker_connections", 1024)  # older runs: 1024
        limit = data["raised_worker_connections"] if r["raised_nginx_limit"] else stock
        if "error" in r:
            first = r["error"].strip().splitlines()[0][:160]
            lines.append(f"| {r['clients']:,} | {limit} | failed: {first} | | | | | | | |")
            continue
        lines.append(
            f"| {r['clients']:,} | {limit} | {r['per_replica']} | {_f(r['connect_seconds'], 1)} "
            f"| {_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {_f(r['deliveries_per_second'], 0)} "
            f"| {r['burst']} msgs in {_f(r['burst_seconds'])} s | {r['missing']} "
            f"| {_busy(r.get('cores_busy'))} |"
        )
    if fanout and fanout.get("sizes"):
        tz = fanout["peers"]["tranzit"]
        single = ", ".join(
            f"{int(n):,}: p50 {_f(row['p50_ms'])} ms, p99 {_f(row['p99_ms'])} ms"
            for n, row in tz.items()
        )
        lines += ["", f"Single process in the same run (fan-out above, tranzit): {single}."]
    lines += [
        "",
        "The generated project's stack on the compose profile `scale`: `--scale ws=3`, Redis,",
        "`TRANZIT_BROADCAST_URL=redis://redis:6379/0`; every client connects through nginx's",
        "`/ws` at nginx's address on the compose network (the published loopback port goes",
        "through docker-proxy, which held ~3 descriptors per websocket and died at ~3,300 of",
        "them under this machine's 20,000 nofile limit; outside clients reach nginx by DNAT,",
        "without it). Latency rounds are `max(0.5, clients / 4000)` s apart, so each broadcast",
        "is delivered before the next. The bench adds two rules to the project: `bench_join`",
        "(`conn.join`, no announcement: the template's chat `join` tells every member,",
        "N\u00b2 messages for N joins) and `bench_say` (`conn.hub.send_group`). Clients:",
        "bench/clients/ws_chat.py, up to",
        f"{data['clients_per_process']:,} connections per process, all on the client core; the",
        "containers are not pinned, so the replicas, Redis and nginx share both cores with the",
        "clients. Latency: the speaker's send to each client's receive (the send time travels in",
        "the text), over the timed messages; deliveries/s: the burst's messages times clients,",
        "over the time from the burst's first send to its last receive.",
        "Each proxied websocket holds two nginx connections; runs with the limit raised set",
        f"TRANZIT_NGINX_WORKER_CONNECTIONS={data['raised_worker_connections']:,} (older runs",
        "mounted a copy of the template with that line changed).",
    ]
    return lines


def _soak(d: dict[str, Any]) -> list[str]:
    c = d["clients"]
    bad = d["bad_clients"]
    return [
        f"{d['seconds']:.0f} s, two ws replicas sharing a `redis-server` "
        f"(bench/workloads/soak.py): {c['good']} members of one group, {c['stalled']} clients "
        f"that stop reading (and send unsolicited pongs), {c['garbage']} sending junk, "
        f"{c['half']} that never finish the handshake; the servers ran with "
        "`TRANZIT_HEADER_TIMEOUT=5` and `TRANZIT_WS_SEND_TIMEOUT=5` so the bad clients' fate "
        "shows within the run. Redis was killed and restarted: " + "; ".join(d["timeline"]) + ".",
        "",
        "| | |",
        "|---|---|",
        f"| group messages sent | {d['messages']} |",
        f"| acknowledged `ok` (every replica had it) | {d['acknowledged']} |",
        f"| refused `BroadcastUnavailable` / `BroadcastIncomplete` | {d['unavailable']} |",
        f"| members that received every acknowledged message, in order | "
        f"{d['members_complete']} of {d['members']} (most missed by one: {d['most_missing']}) |",
        "| largest RSS per replica | "
        + ", ".join(f"{k}: {v} MiB" for k, v in d["rss_mib"].items())
        + f" (bound {d['rss_bound_mib']} MiB) |",
        f"| stalled clients closed by the server | {bad['stalled']['closed_by_server']} of "
        f"{c['stalled']} |",
        f"| junk messages sent / junk connections closed | {bad['garbage']['sent']} / "
        f"{bad['garbage']['closed_by_server']} |",
        f"| half handshakes dropped by the server | {bad['half']['dropped_by_server']} of "
        f"{bad['half']['opened']} |",
        f"| ERROR lines by cause | {d['error_causes'] or 'none'} |",
        f"| WARNING lines | {d['warning_lines']} |",
    ]


def _phase_rows(p: dict[str, Any]) -> list[str]:
    c = p["check"]
    rt = p["resume_round_trip"]
    return [
        f"| reconnects: recovered true / false / no recovery frame | {p['recovered_true']:,} / "
        f"{p['recovered_false']:,} / {p['no_recovery_frame']:,} of {p['reconnects']:,} |",
        f"| close codes the members saw | {p['close_codes']} |",
        f"| `tz.resume` results | {p['resume_results']} |",
        f"| replayed (server's count / msg frames before the recovery frame) "
        f"| {p['replayed']:,} / {p['replayed_frames_seen']:,} |",
        f"| connected → recovery frame p50 / p99 | {_f(rt['p50_ms'], 0)} / "
        f"{_f(rt['p99_ms'], 0)} ms |",
        f"| messages acknowledged `ok` (and unsure) over the run so far "
        f"| {c['acknowledged']:,} ({c['maybe']}) |",
        f"| members with every message once, in order | {c['complete']:,} of {c['members']:,} |",
        f"| missing / duplicated / out of order (all members) | {c['missing']:,} / "
        f"{c['duplicates']:,} / {c['out_of_order']:,} |",
        f"| ... members never told of a gap: complete, missing / duplicated "
        f"| {c.get('always_recovered_complete', 0):,} of {c.get('always_recovered', 0):,}, "
        f"{c.get('always_recovered_missing', 0):,} / {c.get('always_recovered_duplicates', 0):,} |",
        f"| CPU % of one core over the window | {_busy_percent(p['cpu_percent_window'])} |",
        f"| member tasks that failed (load generator) | {p['failed_members'] or 'none'} |",
    ]


def _busy_percent(cpu: dict[str, float]) -> str:
    """``replicas 59, members 42, ...``: % of one core, busiest first (and cores' idle %)."""
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))


def recovery_section(d: dict[str, Any]) -> list[str]:
    """The recovery workload's tables (also spliced by hand into earlier pages)."""
    lines = [
        f"{d['clients']:,} protocol v2 clients (`tranzit.2`) on {d['replicas']} `tranzit serve "
        f"ws` replicas sharing one `redis-server`, {d['groups']} groups (each client joined "
        f"to one by `conn.join(group)`), a publisher at {d['rate']:g} msg/s spread over the "
        f"groups (bench/workloads/recovery.py, bench/clients/ws_recovery.py; "
        f"{d['clients_per_process']:,} clients per process, all on the client core; the "
        "replicas and Redis on the server core).",
        "",
    ]
    k = d.get("kill")
    if k:
        lines += [
            f"**SIGKILL of one replica** ({k['reconnects']:,} of its clients reconnect to the "
            f"other two after a random 0..{d['jitter_s']:g} s and send `tz.resume`):",
            "",
            "| | |",
            "|---|---|",
            f"| kill → connected again p50 / p99 | {_f(k['kill_to_connected']['p50_ms'], 0)} / "
            f"{_f(k['kill_to_connected']['p99_ms'], 0)} ms |",
            f"| kill → recovery frame p50 / p99 / max | {_f(k['kill_to_recovery']['p50_ms'], 0)} "
            f"/ {_f(k['kill_to_recovery']['p99_ms'], 0)} / "
            f"{_f(k['kill_to_recovery']['max_ms'], 0)} ms |",
            f"| all back within the window | {k['all_back_within_window']} ({k['window_s']} s) |",
            f"| messages replayed per second (kill → last recovery frame) "
            f"| {_f(k['replayed_per_second'], 0)} |",
            f"| recovery frames per second after the kill | {k['recovery_frames_per_second']} |",
            *_phase_rows(k),
            f"| CPU % in the reconnect burst (kill → +{k.get('burst_s', 0):g} s) "
            f"| {_busy_percent(k.get('cpu_percent_burst', {}))} |",
            f"| CPU % before the kill (steady traffic) "
            f"| {_busy_percent(k['cpu_percent_steady'])} |",
            "",
        ]
    r = d.get("rolling")
    if r:
        steps = "; ".join(
            f"{s['port']}: stopped in {s['stop_s']} s, ready in {s['ready_s']} s"
            for s in r["steps"]
        )
        lines += [
            f"**Rolling restart**: SIGTERM to each replica in turn (`ws_drain_time` "
            f"{d['drain_time_s']:g} s: 1001 `reconnect` spread over it; clients wait a random "
            f"0..{d['drain_time_s']:g} s), started again, `/readyz` 200, next ({steps}):",
            "",
            "| | |",
            "|---|---|",
            f"| peak reconnects per second (1 s buckets) | {r['peak_reconnects_per_second']:,} |",
            f"| reconnects per second | {r['reconnects_per_second']} |",
            f"| close → recovery frame p50 / p99 | {_f(r['close_to_recovery']['p50_ms'], 0)} / "
            f"{_f(r['close_to_recovery']['p99_ms'], 0)} ms |",
            *_phase_rows(r),
            "",
        ]
    if d.get("memory"):
        lines += [
            "**Memory per idle v2 connection** (one replica with Redis, history on; RSS with N "
            "joined clients minus RSS after one client came and went, over N):",
            "",
            "| join | connections | RSS before → after | KiB per connection |",
            "|---|---:|---|---:|",
        ]
        for m in d["memory"]:
            if "error" in m:
                first = m["error"].strip().splitlines()[0][:160]
                lines.append(f"| `{m['rule']}` | | failed: {first} | |")
                continue
            lines.append(
                f"| `{m['rule']}` | {m['connections']:,} | {m['rss_base_mib']} → "
                f"{m['rss_loaded_mib']} MiB | {m['kib_per_connection']} |"
            )
    return lines


def markdown(results: dict[str, Any], plots: dict[str, str], notes: str | None) -> str:
    run, machine = results["run"], results["run"]["machine"]
    s = results["settings"]
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m bench` (bench/report.py); "
        "edit the harness, not this file. -->",
        "",
        "tranzit side by side with the servers a user would otherwise pick, measured in the same",
        "run on the same machine. Figures to read are the **ratios** between peers of one run:",
        "absolute numbers on these shared 2-core machines drift from run to run.",
        "",
    ]
    if s["quick"]:
        out += [
            "> **Quick run** (`--quick`): a check that the harness works; "
            "the numbers mean nothing.",
            "",
        ]
    out += [
        "## Targets",
        "",
        "| workload | measured | value | target | verdict |",
        "|---|---|---:|---|---|",
    ]
    for c in checks(results):
        out.append(f"| {c.workload} | {c.what} | {c.shown} | {c.target} | {c.verdict} |")
    out += [
        "",
        "## Run",
        "",
        f"* Date: {run['date']}; git commit {run['git_commit']}",
        f"* Command: `{run['command']}`",
        f"* Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}",
        f"* Pinning: {machine['pinning']}",
        "* Versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items() if v),
        f"* 1-minute load average: {run['loadavg_before'][0]} before, "
        f"{run['loadavg_after'][0]} after (1/5/15 min: {run['loadavg_before']} → "
        f"{run['loadavg_after']}); the machine was shared",
        f"* Method: each peer measured {s['repeats']}{TIMES} for {s['duration']} s "
        f"(after {s['warmup']} s of warm-up), interleaved A/B/C/A/B/C; tables show the median "
        f"run. Fan-out: {s['fanout_repeats']} runs per peer and size, {s['broadcasts']} "
        "broadcasts each, fresh server per run.",
        f"* Wall time of the run: {results['elapsed_seconds']:.0f} s",
    ]
    for other in results.get("merged_runs", []):
        out.append(
            f"* Merged from a separate run on the same machine ({other['date']}, commit "
            f"{other['git_commit']}): `{other['command']}`; 1-minute load average "
            f"{other['loadavg_before'][0]} before, {other['loadavg_after'][0]} after"
        )
    out.append("")
    w = results["workloads"]
    for name in ("http_hello", "http_echo", "ws_echo"):
        if name not in w:
            continue
        out += [f"## {TITLES[name]}", ""]
        out += _rate_table(name, w[name])
        out.append("")
    if "ws_echo" in w:
        e = w["ws_echo"]
        if "tranzit-patched" in e["peers"]:
            out += [
                "`tranzit-patched` is an experimental copy of tranzit "
                f"(`--tranzit-path {s['tranzit_path']}`),",
                "measured interleaved with the installed one; see the findings below.",
                "",
            ]
        out += [
            f"{e['connections']} connections, each keeping {e['depth']} messages of 32 characters "
            "in flight (`echo|xxx…`; `tranzit 2018 handler` is the same server sent "
            "`echo_2018|xxx…`, a rule in the 2018 calling convention). The client "
            "(bench/clients/ws_echo.py) builds its masked frame once and checks replies as runs "
            "of the one expected frame, so it stays far below a core while the server "
            "saturates its own; compression is not negotiated; latency is send → echo per "
            "message.",
            "",
        ]
    if "fanout" in w:
        out += [f"## {TITLES['fanout']}", "", *_fanout_table(w["fanout"]), "", *FANOUT_TEXT, ""]
    if "lifecycle" in w:
        out += [f"## {TITLES['lifecycle']}", "", *_lifecycle(w["lifecycle"]), ""]
    if "static" in w:
        out += [f"## {TITLES['static']}", "", *_static(w["static"]), ""]
    if "broadcast" in w:
        out += [f"## {TITLES['broadcast']}", "", *_broadcast(w["broadcast"], w.get("fanout")), ""]
    if "soak" in w:
        out += [f"## {TITLES['soak']}", "", *_soak(w["soak"]), ""]
    if "recovery" in w:
        out += [f"## {TITLES['recovery']}", "", *recovery_section(w["recovery"]), ""]
    if "tls" in w:
        out += [f"## {TITLES['tls']}", "", *_tls(w["tls"]), ""]
    if "postgres" in w:
        out += [f"## {TITLES['postgres']}", "", *_postgres(w["postgres"]), ""]
    if plots:
        out += ["## Plots", ""]
        out += [f"![{title}]({path})" for title, path in plots.items()]
        out.append("")
    elif results.get("plots_skipped"):
        out += ["## Plots", "", f"Plots were skipped: {results['plots_skipped']}.", ""]
    if notes:
        out += [notes.strip(), ""]
    return "\n".join(out)


def plot(results: dict[str, Any], directory: Path, relative_to: Path) -> dict[str, str]:
    """PNG files of throughput, latency and fan-out; ``{title: path relative to the markdown}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    w = results["workloads"]
    made: dict[str, str] = {}
    names = [n for n in ("http_hello", "http_echo", "ws_echo") if n in w]
    if names:
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            peers = w[name]["peers"]
            labels = list(peers)
            ax.bar(
                labels,
                [peers[p]["rate"] for p in labels],
                color=["#2a7", "#58c", "#c85", "#8c8"][: len(labels)],
            )
            for i, p in enumerate(labels):
                runs = [r.get("rps", r.get("rate")) for r in peers[p]["runs"]]
                ax.plot([i] * len(runs), runs, "k.", markersize=4)
            ax.set_title(name)
            ax.set_ylabel(UNITS[name] + " (median; dots: runs)")
            ax.tick_params(axis="x", labelsize=8)
        fig.tight_layout()
        made["Throughput per peer"] = _save(fig, directory / "throughput.png", relative_to)
        plt.close(fig)

        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            peers = w[name]["peers"]
            labels = list(peers)
            x = range(len(labels))
            ax.bar(
                [i - 0.2 for i in x],
                [peers[p]["latency_ms"]["50"] for p in labels],
                0.4,
                label="p50",
            )
            ax.bar(
                [i + 0.2 for i in x],
                [peers[p]["latency_ms"]["99"] for p in labels],
                0.4,
                label="p99",
            )
            ax.set_xticks(list(x), labels, fontsize=8)
            ax.set_title(name)
            ax.set_ylabel("latency ms")
            ax.legend(fontsize=8)
        fig.tight_layout()
        made["Latency percentiles"] = _save(fig, directory / "latency.png", relative_to)
        plt.close(fig)

    if "fanout" in w and w["fanout"]["sizes"]:
        f = w["fanout"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
        for peer, table in f["peers"].items():
            sizes = [n for n in f["sizes"] if str(n) in table]
            a1.plot(sizes, [table[str(n)]["kib_per_connection"] for n in sizes], "o-", label=peer)
            a2.plot(sizes, [table[str(n)]["p50_ms"] for n in sizes], "o-", label=f"{peer} p50")
            a2.plot(sizes, [table[str(n)]["p99_ms"] for n in sizes], "s--", label=f"{peer} p99")
        a1.axhline(32, color="grey", linestyle=":", label="target 32 KiB")
        a1.set_xlabel("idle connections")
        a1.set_ylabel("server RSS delta per connection, KiB")
        a1.legend(fontsize=8)
        a2.set_xlabel("idle connections")
        a2.set_ylabel("broadcast latency ms")
        a2.legend(fontsize=8)
        fig.tight_layout()
        made["Fan-out: memory and broadcast latency"] = _save(
            fig, directory / "fanout.png", relative_to
        )
        plt.close(fig)
    return made


def _save(fig: Any, path: Path, relative_to: Path) -> str:
    fig.savefig(path, dpi=90)
    return os.path.relpath(path, relative_to)
