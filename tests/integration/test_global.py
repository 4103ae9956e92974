"""Global services on a real 3-host cluster, through the `orch` CLI: one task per node;
a drained node loses its task and no other node gets a second one, activate brings it
back; a constraint over a label follows `orch node label`; a node that leaves (its agent
stops, it goes down, `orch node rm`) keeps no task, and when it joins again (its agent
starts and registers anew) it gets one.

The harness cannot add a fourth host to a running cluster, so "a node joins" is a node
removed with `orch node rm` that registers again: for the orchestrator that is a new node
object appearing, the same event as a first join.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests_support import ControlProbe, Sampler, wait_until

pytestmark = pytest.mark.integration

CLUSTER_NODES = 3
HOSTS = ("node1", "node2", "node3")

SERVICE = """
apiVersion: orch/v1
kind: Service
metadata: {name: NAME}
spec:
  image: REGISTRY/busybox:latest
  command: [sleep, "100000"]
  mode: global
  stop_grace_period: 100ms
"""


@pytest.fixture
def apply(orch, cluster, tmp_path):
    """Applies a global sleeper with extra spec lines; removes it (and any drain or
    label a test left) afterwards."""
    made: list[str] = []

    def make(name: str, extra: str = "") -> None:
        text = SERVICE.replace("NAME", name).replace("REGISTRY", cluster.record.registry)
        path = tmp_path / f"{name}.yaml"
        path.write_text(text + extra)
        orch("apply", "-f", str(path))
        made.append(name)

    try:
        yield make
    finally:
        orch("node", "activate", *HOSTS, check=False)
        for host in HOSTS:
            orch("node", "label", host, "edge-", check=False)
        for name in made:
            orch("rm", name, check=False)
        for name in made:
            wait_until(lambda n=name: not orch.tasks_left(n), 60, what=f"{name}'s tasks gone")


def settled(orch, service: str, expected: dict[str, int]) -> bool:
    """Exactly ``expected`` running, and nothing else of the service meant to run."""
    meant = [t for t in orch.tasks(service) if t["desired_state"] == "running"]
    return orch.per_host(service) == expected and len(meant) == sum(expected.values())


def test_one_task_per_node_drain_removes_it_activate_brings_it_back(orch, apply) -> None:
    apply("everywhere")
    every = {"node1": 1, "node2": 1, "node3": 1}
    wait_until(lambda: settled(orch, "everywhere", every), 90, what="one per node")
    service = next(s for s in orch.json("ls") if s["name"] == "everywhere")
    assert service["mode"] == "global"
    assert "3 (global)" in orch("ls").stdout

    refused = orch("scale", "everywhere=5", check=False)
    assert refused.returncode == 1
    assert "service everywhere is global" in refused.stderr

    # From the drain until node2 has its task back: no other node ever runs a second one
    # (nor loses its own).
    api = ControlProbe(orch.cluster)
    per_host = Sampler(lambda: api.running_per_host("everywhere"), 0.05, "tasks per host")
    with api, per_host as s:
        orch("node", "drain", "node2")
        wait_until(
            lambda: settled(orch, "everywhere", {"node1": 1, "node3": 1}), 60, what="node2 empty"
        )
        assert not [t for t in orch.tasks("everywhere") if t["node_hostname"] == "node2"]
        orch("node", "activate", "node2")
        wait_until(lambda: settled(orch, "everywhere", every), 60, what="node2 back")
    s.assert_all(lambda n: n["node1"] == n["node3"] == 1 and n["node2"] <= 1, "one per node")


def test_a_constraint_follows_node_labels(orch, apply) -> None:
    apply("edge", "  placement: {constraints: [node.labels.edge==true]}\n")
    orch("node", "label", "node1", "edge=true")
    wait_until(lambda: settled(orch, "edge", {"node1": 1}), 60, what="edge on node1")
    assert len(orch.tasks("edge", all=True)) == 1  # no task made, even pending, elsewhere
    orch("node", "label", "node3", "edge=true")
    wait_until(lambda: settled(orch, "edge", {"node1": 1, "node3": 1}), 60, what="and node3")
    orch("node", "label", "node1", "edge-")
    wait_until(lambda: settled(orch, "edge", {"node3": 1}), 60, what="node1 unlabelled")


def test_a_node_that_leaves_keeps_no_task_and_gets_one_when_it_joins(orch, cluster, apply) -> None:
    apply("follow")
    every = {"node1": 1, "node2": 1, "node3": 1}
    wait_until(lambda: settled(orch, "follow", every), 90, what="one per node")
    # SIGKILL: a graceful stop would keep the node for the restart grace (30 s; see
    # test_agent_graceful_restart.py) before it counts as gone.
    # From the kill until node3 is removed, its task is not replaced elsewhere: node1 and
    # node2 run one each all along.
    api = ControlProbe(cluster)
    sampler = Sampler(lambda: api.running_per_host("follow"), 0.05, "follow's tasks per host")
    try:
        with api, sampler:
            asyncio.run(cluster.kill_agent("node3", crash=True))
            wait_until(
                lambda: any(
                    n["hostname"] == "node3" and n["status"] == "down" for n in orch.json("nodes")
                ),
                30,
                what="node3 down",
            )
            wait_until(lambda: orch.per_host("follow") == {"node1": 1, "node2": 1}, 30)
            orch("node", "rm", "node3")
            wait_until(
                lambda: (
                    not [t for t in orch.tasks("follow", all=True) if t["node_hostname"] == "node3"]
                    and not any(n["hostname"] == "node3" for n in orch.json("nodes"))
                ),
                30,
                what="node3 and its task gone",
            )
        sampler.assert_all(
            lambda n: n["node1"] == n["node2"] == 1 and n["node3"] <= 1, "no second task"
        )
        assert orch.per_host("follow") == {"node1": 1, "node2": 1}
    finally:
        # A removed node's certificate is refused for good: node3 joins again, as a new
        # node, with the worker token (as an operator would after `orch node rm`).
        asyncio.run(cluster.start_agent("node3", rejoin=True))
    wait_until(
        lambda: any(
            n["hostname"] == "node3" and n["status"] == "ready" for n in orch.json("nodes")
        ),
        60,
        what="node3 registered again",
    )
    wait_until(lambda: settled(orch, "follow", every), 60, what="node3 has its task again")


def test_global_manifest_errors_name_file_and_line(orch, cluster, tmp_path: Path) -> None:
    text = SERVICE.replace("NAME", "badglobal").replace("REGISTRY", cluster.record.registry)
    path = tmp_path / "badglobal.yaml"
    path.write_text(text + "  placement: {max_replicas_per_node: 1}\n")
    res = orch("apply", "-f", str(path), check=False)
    assert res.returncode == 1
    assert (
        f"{path}:10: spec.placement.max_replicas_per_node: max_replicas_per_node does not "
        "apply to a global service" in res.stderr
    ), res.stderr
