"""Side-by-side timing: the contenders run in turns, so a load that comes and goes on the
machine slows them alike, and each one's median over the turns is compared."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(
    contenders: dict[str, Callable[[], object]],
    device: torch.device,
    turns: int = 7,
    calls_per_turn: int = 3,
) -> dict[str, float]:
    """Median seconds per call of each contender, measured in alternating turns."""
    for run in contenders.values():  # warm up: first-call allocations, kernel loading, caches
        run()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(turns):
        for name, run in contenders.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls_per_turn):
                run()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / calls_per_turn)
    return {name: statistics.median(values) for name, values in samples.items()}
