"""Manager HA (issue 5, part 3): two managers share one etcd; kill -9 the leader and the
standby takes over, keeps the agents' tasks running, and a scale issued afterwards (the
CLI fails over to the other manager) converges."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest
from tests_support import holds_for, runc_running, wait_until

from orch.manager.state.election import LEADER_KEY
from orch.manager.state.store import EtcdStore

pytestmark = pytest.mark.integration

CLUSTER_NODES = 2
CLUSTER_MANAGERS = 2

SERVICE = """
apiVersion: orch/v1
kind: Service
metadata: {name: steady}
spec:
  image: REGISTRY/busybox:latest
  command: [sleep, "1000000"]
  replicas: 2
  stop_grace_period: 100ms
"""


def leader(cluster) -> str:
    out = subprocess.run(
        [*cluster.etcdctl_argv(), "get", "--print-value-only", "/orch/v1/leader"],
        capture_output=True,
        text=True,
        env={"ETCDCTL_API": "3"},
    ).stdout.strip()
    return out


# Seconds from the leader's SIGKILL to the standby holding the leader key, seen through an
# etcd watch opened before the kill (the event itself, not a poll). bench/failover.py
# measures the same span on this machine: p99 3.02 s, all of it the 3 s lease TTL
# (bench/RESULTS.md); 5 s leaves ~2 s over that for a loaded `make test`.
TAKEOVER_LIMIT = 5.0


async def kill_and_time_takeover(cluster, old: str, pid: int) -> tuple[str, float]:
    """SIGKILL the leader ``old`` (process ``pid``): (the new leader, seconds from the kill
    until the leader key named it)."""
    store = await EtcdStore.connect(cluster.record.etcd.split(","), tls=cluster.etcd_tls())
    try:
        watch_from = (await store.client.kv.get(LEADER_KEY)).header.revision + 1

        async def elected() -> tuple[str, float]:
            async for batch in store.client.watch.watch(LEADER_KEY, start_revision=watch_from):
                for event in batch.events:
                    if event.type == 0 and event.kv.value.decode() != old:  # a PUT by another
                        return event.kv.value.decode(), time.time()
            raise AssertionError("the leader watch ended")

        election = asyncio.create_task(elected())
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(30):
            new, at = await election
        return new, at - killed_at
    finally:
        await store.close()


def test_standby_takes_over_and_a_later_scale_converges(orch, cluster, tmp_path) -> None:
    path = tmp_path / "steady.yaml"
    path.write_text(SERVICE.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(path))
    try:
        wait_until(lambda: len(orch.running("steady")) == 2, 60)
        before = {t["id"] for t in orch.running("steady")}
        old = wait_until(lambda: leader(cluster), 10, what="a leader")
        managers = wait_until(lambda: len(m := orch.json("managers")) == 2 and m, 10)
        assert [m["id"] for m in managers if m["leader"]] == [old]
        index = int(old.rsplit("-m", 1)[1])
        pid = cluster.record.pids[f"manager-{index}"]
        new, took = asyncio.run(kill_and_time_takeover(cluster, old, pid))
        print(f"the standby led {took:.3f} s after the leader's kill")
        assert took < TAKEOVER_LIMIT, f"the standby took over {took:.2f} s after the kill"
        assert new != old and leader(cluster) == new
        # `orch managers` follows: the dead one's presence expires with its lease.
        wait_until(
            lambda: [(m["id"], m["leader"]) for m in orch.json("managers")] == [(new, True)], 10
        )
        # The tasks kept running: nothing was replaced while the leadership moved.
        wait_until(lambda: all(n["status"] == "ready" for n in orch.json("nodes")), 20)
        assert {t["id"] for t in orch.running("steady")} == before

        orch("scale", "steady=4")  # the CLI fails over to the live manager
        running = wait_until(
            lambda: len(orch.running("steady")) == 4 and orch.running("steady"), 30
        )
        assert before <= {t["id"] for t in running}
    finally:
        orch("rm", "steady", check=False)


def test_agents_keep_their_tasks_while_no_manager_runs(orch, cluster, tmp_path) -> None:
    """Every manager down for longer than the liveness TTL: the containers run on, and the
    manager that leads afterwards gives every node a fresh grace period, so nothing is
    declared down or replaced when the agents come back."""
    path = tmp_path / "steady.yaml"
    path.write_text(SERVICE.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(path))
    try:
        running = wait_until(lambda: len(r := orch.running("steady")) == 2 and r, 60)
        before = {t["id"] for t in running}
        for i in range(len(cluster.managers)):
            asyncio.run(cluster.kill_manager(i, crash=True))
        # Every container, on both hosts, all through an outage of twice the liveness TTL.
        holds_for(
            lambda: all(before & runc_running(cluster, h) for h in ("node1", "node2")),
            4,
            0.1,
            "each host's container running with no manager",
        )
        for i in range(len(cluster.managers)):
            asyncio.run(cluster.start_manager(i))
        wait_until(lambda: all(n["status"] == "ready" for n in orch.json("nodes")), 20)
        assert {t["id"] for t in orch.running("steady")} == before
        every = orch.tasks("steady", all=True)
        assert not [t for t in every if t["state"] == "orphaned"], "a node was declared down"
    finally:
        orch("rm", "steady", check=False)
