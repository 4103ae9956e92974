"""Benchmarks of the VXLAN overlay on a local cluster of 2 network-namespace hosts.

1. Throughput: iperf3 between two containers on different hosts over the overlay network,
   against the same two hosts over the underlay, in the same run (iperf3 runs inside the
   containers' and the hosts' network namespaces). Target: overlay/underlay >= 0.85.
2. Reach: from a task becoming RUNNING on host A (the agent's started_at) until it answers
   a TCP connect from a client container on host B, p50/p99 over N tasks. Target p99 <= 1 s.

    .venv/bin/python bench/overlay.py [--seconds 5] [--repeat 3] [--tasks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import time

from benchlib import hostnames, local_cluster, summary

from orch.identity import channels as tls_channels
from orch.localcluster.cluster import LocalCluster
from orch.overlay import names
from orch.overlay.netns import run_in_netns
from orch.proto import control_pb2, control_pb2_grpc, specs_pb2, types_pb2

HTTPD = "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www"


def service(name: str, image: str, command: list[str], replicas: int) -> specs_pb2.ServiceSpec:
    spec = specs_pb2.ServiceSpec(
        name=name,
        replicas=replicas,
        container=specs_pb2.ContainerSpec(image=image, command=command),
        networks=[specs_pb2.NetworkAttachmentConfig(target="bench")],
    )
    spec.container.stop_grace_period.FromMilliseconds(100)
    return spec


async def tasks_of(stub, name: str) -> list:
    return list((await stub.ListTasks(control_pb2.ListTasksRequest(service=name))).tasks)


async def running(stub, name: str, want: int, limit: float = 120, poll: float = 0.02) -> list:
    deadline = time.monotonic() + limit
    while True:
        tasks = [
            t
            for t in await tasks_of(stub, name)
            if t.status.state == types_pb2.RUNNING and t.desired_state == types_pb2.RUNNING
        ]
        if len(tasks) == want:
            return tasks
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: {want} tasks not running")
        await asyncio.sleep(poll)


def task_netns(cluster: LocalCluster, hostname: str, task) -> str:
    """The network namespace orch made for a task's container on its host."""
    return names.netns_name(cluster.host(hostname)["prefix"], task.id)


def overlay_ip(task) -> str:
    return task.attachments[0].addresses[0].split("/")[0]


def iperf(server_ns: str, client_ns: str, address: str, seconds: int) -> float:
    """Gbit/s from client to server, both run inside the given network namespaces."""
    server = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{server_ns}", "iperf3", "-s", "-1", "-B", address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # until the server listens
            probe = subprocess.run(
                [
                    "nsenter",
                    f"--net=/run/netns/{client_ns}",
                    "iperf3",
                    "-c",
                    address,
                    "-t",
                    str(seconds),
                    "-J",
                ],
                capture_output=True,
                text=True,
            )
            result = json.loads(probe.stdout or "{}")
            if probe.returncode == 0 and "sum_received" in result.get("end", {}):
                return result["end"]["sum_received"]["bits_per_second"] / 1e9
            if "connection refused" not in result.get("error", "refused").lower():
                raise RuntimeError(f"iperf3 to {address}: {result.get('error') or probe.stderr}")
            time.sleep(0.05)
        raise RuntimeError(f"iperf3 to {address} failed: {probe.stdout[-300:]}")
    finally:
        server.kill()
        server.wait()


def connect_until(address: str, port: int, deadline: float) -> float:
    """Runs in the client's netns: TCP connects every 5 ms until one succeeds."""
    while time.time() < deadline:
        with socket.socket() as s:
            s.settimeout(0.05)
            try:
                s.connect((address, port))
                return time.time()
            except OSError:
                time.sleep(0.005)
    raise TimeoutError(f"{address}:{port} never answered")


async def reach_trials(stub, image: str, clients: dict, n: int) -> list[float]:
    samples = []
    for i in range(n):
        name = f"t{i}"
        await stub.Apply(
            control_pb2.ApplyRequest(services=[service(name, image, ["sh", "-c", HTTPD], 1)])
        )
        # Probe from the other host once the task is RUNNING (probing earlier would measure
        # the client kernel's ARP retry timer, not orch).
        [task] = await running(stub, name, 1, poll=0.002)
        other = next(ns for node, ns in clients.items() if node != task.node_id)
        ip = overlay_ip(task)
        answered = await run_in_netns(other, lambda ip=ip: connect_until(ip, 80, time.time() + 30))
        started = task.status.started_at.ToDatetime().timestamp()
        samples.append(answered - started)
        await stub.RemoveService(control_pb2.RemoveServiceRequest(name=name))
    return samples


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=5, help="iperf3 duration per direction")
    p.add_argument("--tasks", type=int, default=20, help="tasks for the reach measure")
    p.add_argument("--repeat", type=int, default=3, help="iperf3 runs per path")
    args = p.parse_args()

    async with local_cluster(nodes=2) as cluster:
        async with tls_channels.aio_channel(cluster.managers[0], cluster.tls()) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            hostname = await hostnames(stub)
            image = f"{cluster.record.registry}/busybox:latest"
            await stub.Apply(
                control_pb2.ApplyRequest(
                    networks=[specs_pb2.NetworkSpec(name="bench", driver="overlay")],
                    services=[service("pair", image, ["sleep", "100000"], 2)],
                )
            )
            pair = await running(stub, "pair", 2)
            assert pair[0].node_id != pair[1].node_id, "the two tasks share a node"
            a, b = pair
            ns_a = task_netns(cluster, hostname[a.node_id], a)
            ns_b = task_netns(cluster, hostname[b.node_id], b)
            ha, hb = cluster.host(hostname[a.node_id]), cluster.host(hostname[b.node_id])

            # Alternate underlay and overlay runs; compare medians (the machine is shared).
            under, over = [], []
            for _ in range(args.repeat):
                under.append(iperf(ha["netns"], hb["netns"], ha["address"], args.seconds))
                over.append(iperf(ns_a, ns_b, overlay_ip(a), args.seconds))
            underlay, overlay = statistics.median(under), statistics.median(over)
            print(
                json.dumps(
                    {
                        "underlay_gbps": [round(x, 2) for x in under],
                        "overlay_gbps": [round(x, 2) for x in over],
                        "ratio_of_medians": round(overlay / underlay, 3),
                        "target": 0.85,
                    }
                ),
                flush=True,
            )

            clients = {a.node_id: ns_a, b.node_id: ns_b}
            samples = await reach_trials(stub, image, clients, args.tasks)
            print(
                json.dumps(
                    {
                        "reach_tasks": len(samples),
                        **summary(samples),
                        "max_s": round(max(samples), 3),
                        "target_p99_s": 1.0,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
