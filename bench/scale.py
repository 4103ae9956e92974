"""Benchmark: `orch scale web=0 -> 20` until all 20 run, against plain runc in the same run.

orch: a local cluster (etcd, manager, one host netns with its agent) with the image already on the node;
the clock runs from the Scale call until ListTasks shows 20 tasks RUNNING.

Floor: the same 20 containers (the config.json orch wrote for a web task, each on its own
overlay rootfs from the same unpacked layers, each in a fresh network namespace) started
with plain `runc run -d`, one after another, from bundles prepared before the clock starts.

    .venv/bin/python bench/scale.py [--replicas 20] [--trials 3]

Prints one JSON line per trial and a summary; bench/RESULTS.md records the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from benchlib import local_cluster

from orch.identity import channels as tls_channels
from orch.proto import control_pb2, control_pb2_grpc, specs_pb2, types_pb2
from orch.runtime.images import ImageStore

WEB_CMD = "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www"


async def running(stub: control_pb2_grpc.ControlStub, service: str) -> int:
    tasks = (await stub.ListTasks(control_pb2.ListTasksRequest(service=service))).tasks
    return sum(
        1
        for t in tasks
        if t.status.state == types_pb2.RUNNING and t.desired_state == types_pb2.RUNNING
    )


async def wait_running(stub, service: str, want: int, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while await running(stub, service) != want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service}: {want} tasks not running after {limit}s")
        await asyncio.sleep(0.01)


async def wait_gone(stub, service: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while True:
        tasks = (
            await stub.ListTasks(
                control_pb2.ListTasksRequest(service=service, include_history=True)
            )
        ).tasks
        if all(t.status.state >= types_pb2.COMPLETE for t in tasks):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service}: tasks still running after {limit}s")
        await asyncio.sleep(0.05)


async def wait_agent_idle(agent_dir: Path, prefix: str, limit: float = 60) -> None:
    """Until the agent has removed every container (rootfs, netns, runc state): so no
    cleanup of one measurement runs during the next."""
    containers = agent_dir / "runtime" / "containers"
    deadline = time.monotonic() + limit
    while any(containers.iterdir()) or list(Path("/run/netns").glob(f"{prefix}-*")):  # noqa: ASYNC240
        if time.monotonic() > deadline:
            raise TimeoutError("the agent did not finish removing containers")
        await asyncio.sleep(0.05)


async def orch_trial(stub, replicas: int) -> float:
    start = time.perf_counter()
    await stub.Scale(control_pb2.ScaleRequest(replicas={"web": replicas}))
    await wait_running(stub, "web", replicas)
    elapsed = time.perf_counter() - start
    await stub.Scale(control_pb2.ScaleRequest(replicas={"web": 0}))
    await wait_gone(stub, "web")
    return elapsed


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def floor_trial(template: Path, layers: list[str], work: Path, replicas: int, tag: str) -> float:
    """Start `replicas` containers with plain `runc run -d` from prepared bundles."""
    root = work / "runc"
    config = json.loads((template / "config.json").read_text())
    bundles = []
    try:
        for i in range(replicas):
            b = work / f"b{i}"
            for d in ("rootfs", "upper", "work"):
                (b / d).mkdir(parents=True, exist_ok=True)
            sh(
                "mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={':'.join(layers)},upperdir={b / 'upper'},workdir={b / 'work'}",
                str(b / "rootfs"),
            )  # fmt: skip
            c = json.loads(json.dumps(config))
            c["root"]["path"] = str(b / "rootfs")
            c["linux"]["cgroupsPath"] = f"/orchbench-{tag}/{i}"
            c["linux"]["namespaces"] = [
                {"type": n["type"]} for n in c["linux"]["namespaces"]
            ]  # fresh namespaces, network included, as a veth-less floor
            c["mounts"] = [
                m for m in c["mounts"] if m["destination"] not in ("/etc/hosts", "/etc/resolv.conf")
            ]
            (b / "config.json").write_text(json.dumps(c))
            bundles.append(b)
        start = time.perf_counter()
        for i, b in enumerate(bundles):
            subprocess.run(
                ["runc", "--root", str(root), "run", "-d", "--bundle", str(b), f"bench{tag}{i}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                check=True,
            )  # fmt: skip
        return time.perf_counter() - start
    finally:
        for i, b in enumerate(bundles):
            sh("runc", "--root", str(root), "delete", "-f", f"bench{tag}{i}", check=False)
            sh("umount", str(b / "rootfs"), check=False)
        for ctrl in Path("/sys/fs/cgroup").iterdir():
            d = ctrl / f"orchbench-{tag}"
            if d.is_dir():
                for sub in sorted(d.iterdir(), reverse=True):
                    if sub.is_dir():
                        sub.rmdir()
                d.rmdir()
        shutil.rmtree(work, ignore_errors=True)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=20)
    p.add_argument("--trials", type=int, default=3)
    args = p.parse_args()

    async with local_cluster(nodes=1) as cluster:
        state = cluster.state_dir
        async with tls_channels.aio_channel(cluster.managers[0], cluster.tls()) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            spec = specs_pb2.ServiceSpec(
                name="web",
                replicas=1,
                container=specs_pb2.ContainerSpec(
                    image=f"{cluster.record.registry}/busybox:latest",
                    command=["sh", "-c", WEB_CMD],
                ),
            )
            spec.container.stop_grace_period.FromMilliseconds(200)
            await stub.Apply(control_pb2.ApplyRequest(services=[spec]))
            await wait_running(stub, "web", 1)  # the image is on the node now
            agent = Path(cluster.record.agents[0]["state_dir"])
            [template] = list((agent / "runtime" / "containers").iterdir())
            image = await ImageStore(agent / "images").get(spec.container.image)
            lower = [str(d) for d in reversed(image.layers)]  # overlayfs wants top first
            # Keep a copy of the template: scaling to 0 removes its bundle.
            keep = state / "template"
            keep.mkdir()
            shutil.copy(template / "config.json", keep / "config.json")
            await stub.Scale(control_pb2.ScaleRequest(replicas={"web": 0}))
            await wait_gone(stub, "web")

            orch_times, floor_times = [], []
            for trial in range(args.trials):
                await wait_agent_idle(agent, cluster.record.agents[0]["prefix"])
                floor = floor_trial(keep, lower, state / f"floor{trial}", args.replicas, f"{trial}")
                await wait_agent_idle(agent, cluster.record.agents[0]["prefix"])
                took = await orch_trial(stub, args.replicas)
                floor_times.append(floor)
                orch_times.append(took)
                print(
                    json.dumps(
                        {
                            "trial": trial,
                            "orch_s": round(took, 3),
                            "floor_s": round(floor, 3),
                            "ratio": round(took / floor, 2),
                        }
                    ),
                    flush=True,
                )
    o, f = statistics.median(orch_times), statistics.median(floor_times)
    print(
        json.dumps(
            {
                "replicas": args.replicas,
                "orch_median_s": round(o, 3),
                "floor_median_s": round(f, 3),
                "ratio": round(o / f, 2),
                "target": 1.5,
                "machine": f"{platform.node()} {platform.machine()} cpus={_cpus()}",
            }
        )
    )


def _cpus() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    asyncio.run(main())
