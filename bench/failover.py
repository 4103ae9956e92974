"""Benchmark: the leader manager dies -> a standby leads and reconciles. p50/p99 over N trials.

A local cluster with 2 managers (one etcd, one host) runs a 1-replica service. Each trial
kills the leader manager with SIGKILL and at once asks the surviving manager to scale the
service up by one (the Control API works on every manager; the write lands in etcd, but
only a leader's orchestrator acts on it). Measured from the kill:

- elected: the leader key names the standby (seen through an etcd watch);
- first reconcile: the new leader's orchestrator created the new slot's task (the task's
  created_at, which the orchestrator stamps with its clock when it plans).

Baseline in the same run: the same scale with a live leader (the scale -> task created
latency) plus the leader lease TTL, the floor of any lease-based failover: a dead leader's
key can only go when its lease expires. Then the killed manager is started again (as the
standby) before the next trial.

    .venv/bin/python bench/failover.py [--trials 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import grpc
from benchlib import local_cluster, summary, until

from orch.identity import channels as tls_channels
from orch.localcluster.cluster import LocalCluster
from orch.manager.state.api import Store
from orch.manager.state.election import LEADER_KEY, ElectionSettings
from orch.manager.state.store import EtcdStore
from orch.proto import control_pb2, control_pb2_grpc, specs_pb2


async def leader(store: Store) -> str:
    kv = await store.get_key(LEADER_KEY)
    return kv.value.decode() if kv else ""


async def task_created(stub, slot: int) -> float | None:
    """created_at (unix seconds) of the service's task for ``slot``, once it exists."""
    tasks = (await stub.ListTasks(control_pb2.ListTasksRequest(service="web"))).tasks
    for task in tasks:
        if task.slot == slot:
            return task.meta.created_at.ToDatetime().timestamp()
    return None


async def scale(stub, replicas: int) -> None:
    """Scale through ``stub``, retrying while its manager is not answering."""
    request = control_pb2.ScaleRequest(replicas={"web": replicas})
    async with asyncio.timeout(30):
        while True:
            try:
                await stub.Scale(request)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.02)


async def live_reconcile(stub, replicas: int) -> float:
    """Scale with a live leader: seconds until the new slot's task exists."""
    t0 = time.time()
    await scale(stub, replicas)
    created = await until(lambda: task_created(stub, replicas), 30, "the task of a live scale")
    return created - t0


async def trial(cluster: LocalCluster, store: Store, stubs: list, replicas: int) -> dict:
    old = await leader(store)
    index = int(old.rsplit("-m", 1)[1])
    survivor = stubs[1 - index]
    watch_from = await store.revision() + 1

    async def elected() -> float:
        async for event in store.watch_key(LEADER_KEY, watch_from):
            if event.value is not None and event.value.decode() != old:  # a put by another
                return time.time()
        raise RuntimeError("leader watch ended")

    election = asyncio.create_task(elected())
    t0 = time.time()
    await cluster.kill_manager(index, crash=True)
    await scale(survivor, replicas)
    created = await until(lambda: task_created(survivor, replicas), 30, "the new leader's task")
    async with asyncio.timeout(30):
        elected_at = await election
    await cluster.start_manager(index)
    return {"elected_s": elected_at - t0, "first_reconcile_s": created - t0}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    args = p.parse_args()
    results, live = [], []
    async with local_cluster(nodes=1, managers=2) as cluster:
        store = await EtcdStore.connect(cluster.record.etcd.split(","), tls=cluster.etcd_tls())
        channels = [tls_channels.aio_channel(m, cluster.tls()) for m in cluster.managers]
        stubs = [control_pb2_grpc.ControlStub(c) for c in channels]
        spec = specs_pb2.ServiceSpec(
            name="web",
            replicas=1,
            container=specs_pb2.ContainerSpec(
                image=f"{cluster.record.registry}/busybox:latest", command=["sleep", "1000000"]
            ),
        )
        spec.container.stop_grace_period.FromMilliseconds(100)
        await stubs[0].Apply(control_pb2.ApplyRequest(services=[spec]))
        replicas = 1
        for i in range(args.trials):
            replicas += 1
            live.append(await live_reconcile(stubs[0], replicas))
            replicas += 1
            result = await trial(cluster, store, stubs, replicas)
            results.append(result)
            print(json.dumps({"trial": i, **{k: round(v, 3) for k, v in result.items()}}))
        for c in channels:
            await c.close()
        await store.close()
    firsts = [r["first_reconcile_s"] for r in results]
    elections = [r["elected_s"] for r in results]
    ttl = ElectionSettings().lease_ttl
    floor = ttl + statistics.median(live)
    print(
        json.dumps(
            {
                "trials": len(results),
                **summary(elections, "elected"),
                **summary(firsts, "first_reconcile"),
                "live_reconcile_p50_s": round(statistics.median(live), 3),
                "lease_ttl_s": ttl,
                "floor_s": round(floor, 3),
                "ratio_p50_to_floor": round(statistics.median(firsts) / floor, 2),
                "target_p99_s": 5.0,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
