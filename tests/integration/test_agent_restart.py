"""Containers outlive their agent: a restarted agent re-adopts them (issue 5, part 2).

The agent of a one-host cluster is killed with SIGKILL and started again. The same
containers (same runc pids) keep running, no task is restarted or replaced, their logs
continue, and a container that ended while the agent was away is reported with its exit
code. A restarted agent also removes what a killed one left half made for a task that is
no longer assigned (a mounted rootfs without a container record, an endpoint).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tests_support import wait_until

from orch.overlay import names
from orch.overlay.netns import list_netns
from orch.runtime.rootfs import is_mounted

pytestmark = pytest.mark.integration

# An agent restart must not look like a lost node: on a busy CI machine a restart can take
# longer than the default 2 s liveness TTL (real deployments tune the same knob).
CLUSTER_LIVENESS_TTL = 10

SERVICES = """
apiVersion: orch/v1
kind: Service
metadata: {name: ticker}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done']
  replicas: 2
  stop_grace_period: 100ms
---
apiVersion: orch/v1
kind: Service
metadata: {name: shortlived}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'echo started; while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7']
  restart_policy: {condition: none}
  stop_grace_period: 100ms
"""


def runc_pids(cluster) -> dict[str, int]:
    root = cluster.record.agents[0]["runc_root"]
    out = subprocess.run(
        ["runc", "--root", root, "list", "--format", "json"], capture_output=True, text=True
    ).stdout
    return {c["id"]: c["pid"] for c in json.loads(out or "null") or [] if c["status"] == "running"}


def node_ready(orch) -> bool:
    return all(n["status"] == "ready" for n in orch.json("nodes"))


def test_restarted_agent_adopts_its_containers(orch, cluster, tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(SERVICES.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(path))
    try:
        wait_until(
            lambda: len(orch.running("ticker")) == 2 and len(orch.running("shortlived")) == 1, 60
        )
        before = {t["id"]: t for t in orch.tasks()}
        pids = runc_pids(cluster)
        assert set(before) <= set(pids)
        [short] = orch.running("shortlived")

        asyncio.run(cluster.kill_agent("node1", crash=True))
        # While no agent runs, the short-lived container ends on its own.
        root = cluster.record.agents[0]["runc_root"]
        subprocess.run(
            ["runc", "--root", root, "exec", short["id"], "touch", "/tmp/go"], check=True
        )
        wait_until(lambda: short["id"] not in runc_pids(cluster), 10, what="it to end")
        asyncio.run(cluster.start_agent("node1"))
        wait_until(lambda: node_ready(orch), 30, what="the node to be ready again")

        # Same containers, same processes, no restart and no replacement.
        wait_until(lambda: len(orch.running("ticker")) == 2, 30)
        after = {t["id"]: t for t in orch.tasks("ticker")}
        assert set(after) == {i for i, t in before.items() if t["service"] == "ticker"}
        assert all(t["restart_count"] == 0 for t in after.values())
        still = runc_pids(cluster)
        for task_id in after:
            assert still[task_id] == pids[task_id], "the container was restarted"
        assert len(orch.tasks("ticker", all=True)) == 2

        # The exit while the agent was away is reported with its code.
        ended = wait_until(
            lambda: (
                (t := orch.tasks("shortlived", all=True)) and t[0]["state"] == "failed" and t[0]
            ),
            30,
        )
        assert ended["id"] == short["id"] and ended["exit_code"] == 7

        # Logs go on: lines written after the restart are there, in one unbroken count.
        def ticks() -> list[int]:
            out = orch("logs", "ticker.1").stdout
            return [int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "tick" in line]

        first = ticks()
        wait_until(lambda: len(ticks()) > len(first) + 3, 10, what="new log lines")
        seq = ticks()
        assert seq == list(range(seq[0], seq[0] + len(seq))), "log lines lost or repeated"
    finally:
        orch("rm", "ticker", "shortlived", check=False)


# What an agent killed while it prepared a task leaves: the task's endpoint (its netns)
# and a container dir whose rootfs is mounted but whose record was never written. Run in
# the host's netns (as the agent), with the agent's own settings.
PLANT = """
import asyncio, sys
from pathlib import Path
from orch.overlay.endpoints import EndpointManager
from orch.overlay.settings import NetworkSettings
from orch.runtime.containers import ContainerRuntime
from orch.runtime.images import ImageSettings, ImageStore
from orch.runtime.model import ContainerConfig
from orch.runtime.settings import RuntimeSettings

async def main(state, prefix, subnet, runc_root, cgroup, ref, registry, mirror, task_id):
    state = Path(state)
    endpoints = EndpointManager(
        NetworkSettings(prefix=prefix, state_dir=state, bridge_subnet=subnet)
    )
    await endpoints.setup(task_id, ["none"])
    runtime = ContainerRuntime(
        RuntimeSettings(
            state_dir=state / "runtime", runc_root=Path(runc_root), cgroup_parent=cgroup
        )
    )
    images = ImageStore(state / "images", ImageSettings(mirrors={registry: mirror}))
    image = await images.pull(ref)
    await runtime.create(ContainerConfig(id=task_id, image=ref, command=["true"]), image)
    (runtime.container_dir(task_id) / "container.json").unlink()
    await runtime.close()

asyncio.run(main(*sys.argv[1:]))
"""


def test_a_restarted_agent_removes_what_a_killed_one_left_half_made(orch, cluster) -> None:
    host = cluster.record.agents[0]
    task_id = "leftover" + uuid.uuid4().hex[:17]  # no task of the cluster has it
    netns = names.netns_name(host["prefix"], task_id)
    rootfs = Path(host["state_dir"]) / "runtime" / "containers" / task_id / "rootfs"
    asyncio.run(cluster.kill_agent("node1", crash=True))
    try:
        res = cluster.run_on(
            "node1",
            [
                sys.executable, "-c", PLANT,
                host["state_dir"], host["prefix"], host["bridge_subnet"], host["runc_root"],
                host["cgroup"], f"{cluster.record.registry}/busybox:latest",
                cluster.record.registry, cluster.record.registry_mirror, task_id,
            ],
            timeout=60,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert netns in list_netns(names.owned_prefix(host["prefix"]))
        assert is_mounted(rootfs)
    finally:
        asyncio.run(cluster.start_agent("node1"))
    wait_until(lambda: node_ready(orch), 30, what="the node to be ready again")

    def cleaned() -> bool:
        return netns not in list_netns(names.owned_prefix(host["prefix"])) and not (
            rootfs.parent.exists() or is_mounted(rootfs)
        )

    wait_until(cleaned, 30, what=f"the agent to remove {task_id}'s netns and rootfs")
