"""Benchmark: a rolling update of 12 replicas (parallelism 3, start-first, delay D) against
its floor, measured in the same run.

A local cluster of 3 network-namespace hosts runs `web`: busybox httpd with an http health
check (interval 200 ms). The floor is what the rollout cannot beat: 4 batches x the time
one task takes from its creation to HEALTHY, plus 3 delays. That single-task time is
measured first, in the same cluster, by scaling a second service with the same spec from 0
to 1 (`--singles` times; the median). The rollout is then an Apply of a new env value; it
is timed from the creation of the first new task to the moment the last new task is seen
HEALTHY. Both ends of both figures are observed the same way: `created_at` of the task, and
the first ListTasks poll (every 20 ms) that shows it healthy. Target: rollout <= 1.3 x floor.

    .venv/bin/python bench/rollout.py [--runs 3] [--singles 5] [--delay 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from benchlib import local_cluster, until

from orch.identity import channels as tls_channels
from orch.proto import control_pb2, control_pb2_grpc, objects_pb2, specs_pb2, types_pb2

REPLICAS, PARALLELISM = 12, 3


def spec(
    registry: str, name: str, replicas: int, version: str, delay: float
) -> specs_pb2.ServiceSpec:
    s = specs_pb2.ServiceSpec(name=name, replicas=replicas)
    c = s.container
    c.image = f"{registry}/busybox:latest"
    c.command.extend(
        ["sh", "-c", "mkdir -p /www && echo ok > /www/h && exec httpd -f -p 80 -h /www"]
    )
    c.env.append(f"VERSION={version}")
    c.stop_grace_period.FromMilliseconds(200)
    c.healthcheck.http.port = 80
    c.healthcheck.http.path = "/h"
    c.healthcheck.interval.FromMilliseconds(200)
    c.healthcheck.timeout.FromSeconds(1)
    c.healthcheck.retries = 2
    s.update.parallelism = PARALLELISM
    s.update.order = specs_pb2.UpdateConfig.START_FIRST
    s.update.delay.FromMilliseconds(int(delay * 1000))
    s.update.monitor.FromMilliseconds(500)
    return s


async def tasks(stub, service: str) -> list[objects_pb2.Task]:
    return list((await stub.ListTasks(control_pb2.ListTasksRequest(service=service))).tasks)


def healthy(t: objects_pb2.Task) -> bool:
    return (
        t.desired_state == types_pb2.RUNNING
        and t.status.state == types_pb2.RUNNING
        and t.status.health == types_pb2.HEALTH_HEALTHY
    )


async def watch_healthy(stub, service: str, want, done) -> dict[str, float]:
    """Poll every 20 ms; the first wall time each task matching `want` is seen healthy,
    until `done(seen)`."""
    seen: dict[str, float] = {}
    created: dict[str, float] = {}
    while True:
        now = time.time()
        for t in await tasks(stub, service):
            if want(t):
                created[t.id] = t.meta.created_at.ToNanoseconds() / 1e9
                if healthy(t) and t.id not in seen:
                    seen[t.id] = now
        if done(seen):
            return {"created": created, "healthy": seen}  # type: ignore[return-value]
        await asyncio.sleep(0.02)


async def single(stub, registry: str, delay: float) -> float:
    """Scale `one` 0 -> 1: creation to HEALTHY of one task."""
    await stub.Scale(control_pb2.ScaleRequest(replicas={"one": 1}))
    r = await asyncio.wait_for(
        watch_healthy(stub, "one", lambda t: True, lambda seen: len(seen) >= 1), 60
    )
    [(task_id, seen)] = r["healthy"].items()
    took = seen - r["created"][task_id]
    await stub.Scale(control_pb2.ScaleRequest(replicas={"one": 0}))
    await until(lambda: _none(stub, "one"), 60, "one's task to go")
    return took


async def _none(stub, service: str) -> bool:
    return not [t for t in await tasks(stub, service) if t.desired_state == types_pb2.RUNNING]


async def rollout(stub, registry: str, version: str, delay: float) -> dict[str, float]:
    old = {t.id for t in await tasks(stub, "web")}
    await stub.Apply(
        control_pb2.ApplyRequest(services=[spec(registry, "web", REPLICAS, version, delay)])
    )
    new = lambda t: t.id not in old  # noqa: E731
    r = await asyncio.wait_for(
        watch_healthy(stub, "web", new, lambda seen: len(seen) >= REPLICAS), 300
    )
    first = min(r["created"].values())
    last = max(r["healthy"].values())

    async def completed() -> bool:
        info = await stub.GetService(control_pb2.GetServiceRequest(name="web"))
        return info.service.update_status.state == objects_pb2.UpdateStatus.COMPLETED

    await until(completed, 60, "the update to complete")
    return {"took": last - first, "batches": len(set(r["created"].values()))}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--singles", type=int, default=5)
    p.add_argument("--delay", type=float, default=0.5)
    args = p.parse_args()
    results = []
    async with local_cluster(nodes=3) as cluster:
        registry = cluster.record.registry
        async with tls_channels.aio_channel(cluster.managers[0], cluster.tls()) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            await stub.Apply(
                control_pb2.ApplyRequest(
                    services=[
                        spec(registry, "web", REPLICAS, "0", args.delay),
                        spec(registry, "one", 0, "0", args.delay),
                    ]
                )
            )

            async def all_healthy() -> bool:
                return sum(healthy(t) for t in await tasks(stub, "web")) == REPLICAS

            await until(all_healthy, 120, "12 healthy replicas")
            for run in range(1, args.runs + 1):
                singles = [await single(stub, registry, args.delay) for _ in range(args.singles)]
                one = statistics.median(singles)
                floor = 4 * one + 3 * args.delay
                r = await rollout(stub, registry, str(run), args.delay)
                results.append(
                    {
                        "run": run,
                        "single_create_to_healthy_s": round(one, 3),
                        "singles_s": [round(s, 3) for s in singles],
                        "floor_s": round(floor, 3),
                        "rollout_s": round(r["took"], 3),
                        "ratio": round(r["took"] / floor, 3),
                    }
                )
                print(json.dumps(results[-1]), flush=True)
    ratios = [r["ratio"] for r in results]
    print(json.dumps({"runs": len(results), "ratio_median": statistics.median(ratios),
                      "ratio_max": max(ratios), "target": 1.3}))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
