"""How long and how often: the full run and the ``--quick`` check of the harness."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    quick: bool
    #: measured seconds per run, and runs per peer (interleaved A/B/A/B)
    duration: float
    warmup: float
    repeats: int
    http_connections: int = 64
    ws_connections: int = 50
    ws_depth: int = 16
    fanout_sizes: tuple[int, ...] = (1000, 5000, 10000)
    fanout_repeats: int = 2
    broadcasts: int = 5
    #: broadcast across 3 ws replicas: (clients, nginx worker_connections raised?)
    chat_sizes: tuple[tuple[int, bool], ...] = ((900, False), (2000, False), (10000, True))
    chat_per_process: int = 2500
    tranzit_path: str | None = None


FULL = Settings(quick=False, duration=5.0, warmup=1.0, repeats=3)
QUICK = Settings(
    quick=True,
    duration=0.4,
    warmup=0.2,
    repeats=1,
    ws_connections=10,
    fanout_sizes=(100,),
    fanout_repeats=1,
    broadcasts=2,
    chat_sizes=((20, False),),
)
