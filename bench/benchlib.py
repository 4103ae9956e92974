"""What the benchmark scripts share (run as `python bench/x.py`, so this is importable)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from orch.localcluster.cluster import ClusterSettings, LocalCluster, down, free_port
from orch.proto import control_pb2


def pct(values: list[float], p: float) -> float:
    """The p-th percentile by nearest rank (p99 of 20 samples is the largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float], prefix: str = "") -> dict[str, float]:
    """p50 and p99 of ``values`` in seconds, as the JSON lines name them
    (``<prefix>_p50_s``; ``p50_s`` without a prefix)."""
    lead = f"{prefix}_" if prefix else ""
    return {
        f"{lead}p50_s": round(statistics.median(values), 3),
        f"{lead}p99_s": round(pct(values, 99), 3),
    }


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


@contextlib.asynccontextmanager
async def local_cluster(**settings: Any) -> AsyncIterator[LocalCluster]:
    """A local cluster up in a fresh state directory (``settings``: ClusterSettings'
    fields besides state_dir and registry_port); torn down and removed afterwards."""
    state = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    cluster = LocalCluster(ClusterSettings(state_dir=state, registry_port=free_port(), **settings))
    try:
        await cluster.up()
        yield cluster
    finally:
        await down(state)
        shutil.rmtree(state, ignore_errors=True)


async def hostnames(stub: Any) -> dict[str, str]:
    """Node id -> hostname, from the Control API."""
    nodes = (await stub.ListNodes(control_pb2.ListNodesRequest())).nodes
    return {n.id: n.description.hostname for n in nodes}
