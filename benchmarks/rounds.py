"""Interleaved timing rounds: A B C, A B C, ... so that load from other processes hits every implementation alike.

Each implementation has already run its workload twice (compile, warm-up).
A round gives each, in turn, a segment of whole steps lasting about
`segment_s`; while one runs the others wait on their stdin (no CPU). The
ratio jaxsr / peer is taken within each round, then summarised by its median
and min..max over the rounds.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks.processes import Worker


def spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "per_round": values}


def interleaved(workers: dict[str, Worker], *, items_per_step: int, warm_step_s: dict[str, float], rounds: int,
                segment_s: float, gap_s: float = 0.1) -> dict[str, Any]:
    """{'steps_per_segment': {impl: n}, 'rates': {impl: [items/s per round]}}."""
    steps = {name: max(1, round(segment_s / max(warm_step_s[name], 1e-9))) for name in workers}
    rates: dict[str, list[float]] = {name: [] for name in workers}
    for _ in range(rounds):
        for name, w in workers.items():
            time.sleep(gap_s)  # lets the previous worker's spinning threads go idle
            seconds = w.call("run", steps=steps[name])
            rates[name].append(steps[name] * items_per_step / seconds)
    return {"steps_per_segment": steps, "rates": rates}


def ratios(rates: dict[str, list[float]], subject: str) -> dict[str, dict[str, Any]]:
    """subject / peer, round by round, for every other implementation."""
    mine = rates[subject]
    return {f"{subject} / {peer}": spread([a / b for a, b in zip(mine, theirs)])
            for peer, theirs in rates.items() if peer != subject}
