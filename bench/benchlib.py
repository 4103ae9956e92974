"""What the benchmark scripts share (run as `python bench/x.py`, so this is importable)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def pct(values: list[float], p: float) -> float:
    """The p-th percentile by nearest rank (p99 of 20 samples is the largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def until(
    cond: Callable[[], Awaitable[Any]], limit: float, what: str, poll: float = 0.02
) -> Any:
    """Await ``cond()`` every ``poll`` seconds until it returns something truthy;
    TimeoutError after ``limit`` seconds. For benchmark drivers outside the cluster, which
    have no watch."""
    deadline = time.monotonic() + limit
    while not (value := await cond()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(poll)
    return value
