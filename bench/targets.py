# ruff: noqa: RUF001
"""The targets of issue 6, checked against one run's results."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    workload: str
    what: str
    value: float | None
    target: str
    met: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured" if self.value is None else "—"
        return "met" if self.met else "**missed**"


def _rate(results: dict[str, Any], workload: str, peer: str) -> float | None:
    try:
        value = results["workloads"][workload]["peers"][peer]["rate"]
    except KeyError:
        return None
    return value if value and not math.isnan(value) else None


def _ratio(results: dict[str, Any], workload: str, a: str, b: str) -> float | None:
    x, y = _rate(results, workload, a), _rate(results, workload, b)
    return None if x is None or y is None else x / y


def checks(results: dict[str, Any]) -> list[Check]:
    out: list[Check] = []

    def at_least(workload: str, peer: str, minimum: float | None) -> None:
        ratio = _ratio(results, workload, "tranzit", peer)
        target = f"≥ {minimum}×" if minimum is not None else "(no target)"
        met = None if ratio is None or minimum is None else ratio >= minimum
        out.append(Check(workload, f"tranzit / {peer} throughput", ratio, target, met))

    at_least("http_hello", "aiohttp", 0.95)
    at_least("http_hello", "uvicorn+starlette", 1.2)
    at_least("http_echo", "aiohttp", 0.9)
    at_least("http_echo", "uvicorn+starlette", None)
    at_least("ws_echo", "aiohttp", 0.9)
    at_least("ws_echo", "websockets", 1.5)

    fanout = results["workloads"].get("fanout", {})
    peers = fanout.get("peers", {})
    for n in fanout.get("sizes", []):
        tz, raw = peers.get("tranzit", {}).get(str(n)), peers.get("aiohttp", {}).get(str(n))
        if tz is None:
            continue
        kib = tz["kib_per_connection"]
        out.append(
            Check("fanout", f"{n} conns: tranzit KiB per connection", kib, "≤ 32 KiB", kib <= 32)
        )
        if raw is None:
            continue
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            ratio = tz[key] / raw[key] if raw[key] else None
            met = None if ratio is None else ratio <= 1.2
            out.append(
                Check(
                    "fanout",
                    f"{n} conns: broadcast {label} tranzit / aiohttp",
                    ratio,
                    "≤ 1.2×",
                    met,
                )
            )
        ratio = tz["server_loop_ms"] / raw["server_loop_ms"] if raw["server_loop_ms"] else None
        out.append(
            Check(
                "fanout",
                f"{n} conns: server send loop tranzit / aiohttp",
                ratio,
                "(reported)",
                None,
            )
        )

    for workload, what in (
        ("static", "through nginx / bare nginx"),
        ("lifecycle", "image, build, start, stop"),
    ):
        data = results["workloads"].get(workload)
        if data is None or data.get("status") == "not measured":
            out.append(Check(workload, what, None, "see issue 6", None))
    return out
