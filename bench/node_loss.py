"""Benchmark: a host dies -> its tasks run again elsewhere. p50/p99 over N trials.

A local cluster of 3 network-namespace hosts runs a 3-replica service. Each trial kills a
host that runs a task (its agent with SIGKILL and every one of its containers with `runc
kill -a KILL`, so nothing of it answers any more) and measures from the kill until the
last replacement task is RUNNING (the agents' started_at). Then the host is started again
and the cluster settles (exactly 3 running, the old containers gone) before the next trial.

    .venv/bin/python bench/node_loss.py [--trials 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time

from benchlib import hostnames, local_cluster, summary, until

from orch.identity import channels as tls_channels
from orch.localcluster.cluster import LocalCluster
from orch.proto import control_pb2, control_pb2_grpc, specs_pb2, types_pb2


async def tasks(stub) -> list:
    return list((await stub.ListTasks(control_pb2.ListTasksRequest(service="web"))).tasks)


def runc_ids(cluster: LocalCluster, hostname: str) -> list[str]:
    out = subprocess.run(
        ["runc", "--root", cluster.host(hostname)["runc_root"], "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [c["id"] for c in json.loads(out or "null") or [] if c["status"] == "running"]


async def trial(cluster: LocalCluster, stub, hostname: dict[str, str]) -> float:
    running = [t for t in await tasks(stub) if t.status.state == types_pb2.RUNNING]
    victim_id = running[0].node_id
    victim = hostname[victim_id]
    old = {t.id for t in running if t.node_id == victim_id}
    before = {t.id for t in await tasks(stub)}

    t0 = time.time()
    await cluster.kill_agent(victim, crash=True)
    root = cluster.host(victim)["runc_root"]
    for cid in runc_ids(cluster, victim):
        kill = await asyncio.create_subprocess_exec(
            "runc", "--root", root, "kill", "-a", cid, "KILL"
        )
        await kill.wait()

    async def replaced():
        live = [
            t
            for t in await tasks(stub)
            if t.desired_state == types_pb2.RUNNING and t.status.state == types_pb2.RUNNING
        ]
        fresh = [t for t in live if t.id not in before]
        return fresh if len(live) == 3 and len(fresh) >= len(old) else None

    fresh = await until(replaced, 60, f"replacements of {victim}'s tasks")
    took = max(t.status.started_at.ToDatetime().timestamp() for t in fresh) - t0

    await cluster.start_agent(victim)

    async def settled() -> bool:
        nodes = (await stub.ListNodes(control_pb2.ListNodesRequest())).nodes
        ready = all(n.status.state == types_pb2.NODE_READY for n in nodes)
        return ready and not (old & set(runc_ids(cluster, victim)))

    await until(settled, 60, f"{victim} to come back and stop its old containers")
    return took


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    args = p.parse_args()
    async with local_cluster(nodes=3) as cluster:
        async with tls_channels.aio_channel(cluster.managers[0], cluster.tls()) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            hostname = await hostnames(stub)
            spec = specs_pb2.ServiceSpec(
                name="web",
                replicas=3,
                container=specs_pb2.ContainerSpec(
                    image=f"{cluster.record.registry}/busybox:latest",
                    command=["sleep", "1000000"],
                ),
            )
            spec.container.stop_grace_period.FromMilliseconds(100)
            await stub.Apply(control_pb2.ApplyRequest(services=[spec]))

            async def three_running() -> bool:
                return sum(t.status.state == types_pb2.RUNNING for t in await tasks(stub)) == 3

            await until(three_running, 60, "3 tasks running")
            samples = []
            for i in range(args.trials):
                took = await trial(cluster, stub, hostname)
                samples.append(took)
                print(json.dumps({"trial": i, "replaced_after_s": round(took, 3)}), flush=True)
    print(
        json.dumps(
            {
                "trials": len(samples),
                **summary(samples),
                "max_s": round(max(samples), 3),
                "target_p99_s": 5.0,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
