"""Node availability and labels on 3 network-namespace hosts, through the real `orch` CLI:
drain moves a node's tasks away, activate lets it take new ones (moved tasks stay where
they are, as in Swarm), pause keeps a node out of new placements, labels show in
`orch nodes`, and a node that is ready cannot be removed.

Every test leaves all nodes active and removes its service, also on failure.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from tests_support import wait_until

from orch.cli.views import parse_rfc3339

pytestmark = pytest.mark.integration

CLUSTER_NODES = 3

SLEEPER = """
apiVersion: orch/v1
kind: Service
metadata: {name: NAME}
spec:
  image: REGISTRY/busybox:latest
  command: [sleep, "100000"]
  replicas: REPLICAS
  stop_grace_period: 100ms
"""


def node(orch, hostname: str) -> dict:
    return next(n for n in orch.json("nodes") if n["hostname"] == hostname)


@pytest.fixture
def service(orch, cluster, tmp_path):
    """Applies a 6-replica sleeper service named after the test; removes it afterwards and
    makes every node active again."""
    made: list[str] = []

    def make(name: str, replicas: int = 6) -> str:
        text = SLEEPER.replace("NAME", name).replace("REPLICAS", str(replicas))
        path = tmp_path / f"{name}.yaml"
        path.write_text(text.replace("REGISTRY", cluster.record.registry))
        orch("apply", "-f", str(Path(path)))
        made.append(name)
        wait_until(
            lambda: len(orch.running(name)) == replicas, 90, what=f"{replicas} {name} running"
        )
        return name

    try:
        yield make
    finally:
        orch("node", "activate", "node1", "node2", "node3", check=False)
        for name in made:
            orch("rm", name, check=False)
        for name in made:
            wait_until(lambda n=name: not orch.tasks_left(n), 30)


def every_task(orch, task_id: str, state: str) -> dict | None:
    """Task ``task_id`` once it is in ``state``."""
    task = next((t for t in orch.tasks(all=True) if t["id"] == task_id), None)
    return task if task and task["state"] == state else None


def test_drain_moves_tasks_away_and_activate_takes_new_ones(orch, service) -> None:
    name = service("drainee")
    assert orch.per_host(name)["node1"] > 0  # spread: 2 per node

    res = orch("node", "drain", "node1")
    assert res.stdout.strip().startswith("node/node1 drained")
    assert node(orch, "node1")["availability"] == "drain"

    def moved() -> Counter | None:
        counts = orch.per_host(name)
        return counts if sum(counts.values()) == 6 and "node1" not in counts else None

    counts = wait_until(moved, 60, what="6 tasks running on node2 and node3 only")
    assert set(counts) == {"node2", "node3"}
    # Start-first: each old task stopped only after the task that moved it was running.
    slots = {t["slot"]: t for t in orch.running(name)}
    old_ids = [
        t["id"]
        for t in orch.tasks(all=True)
        if t["service"] == name and t["node_hostname"] == "node1"
    ]
    assert len(old_ids) == 2, f"expected node1's 2 tasks to have moved: {old_ids}"
    for old_id in old_ids:
        old = wait_until(lambda i=old_id: every_task(orch, i, "shutdown"), 30)
        new = slots[old["slot"]]
        stopped, started = parse_rfc3339(old["state_since"]), parse_rfc3339(new["state_since"])
        assert stopped >= started, f"{old_id} stopped before {new['id']} ran"
    stayed = {t["id"] for t in orch.running(name)}

    res = orch("node", "activate", "node1")
    assert res.stdout.strip().startswith("node/node1 activated")
    assert node(orch, "node1")["availability"] == "active"
    # Nothing moves back; the node takes new tasks: spreading 9 puts 3 on each node.
    assert {t["id"] for t in orch.running(name)} == stayed
    orch("scale", f"{name}=9")
    counts = wait_until(
        lambda: (c := orch.per_host(name)) and sum(c.values()) == 9 and c,
        60,
        what="9 tasks running",
    )
    assert counts["node1"] == 3
    assert stayed <= {t["id"] for t in orch.running(name)}


def test_pause_keeps_new_tasks_off_the_node(orch, service) -> None:
    name = service("pausee", replicas=3)
    before = orch.per_host(name)
    assert before["node2"] == 1

    res = orch("node", "pause", "node2")
    assert res.stdout.strip().startswith("node/node2 paused")
    orch("scale", f"{name}=7")
    counts = wait_until(
        lambda: (c := orch.per_host(name)) and sum(c.values()) == 7 and c,
        60,
        what="7 tasks running",
    )
    # The paused node keeps its task and gets no new one.
    assert counts["node2"] == 1
    assert counts["node1"] + counts["node3"] == 6
    assert node(orch, "node2")["availability"] == "pause"


def test_labels_show_in_nodes_listing(orch, cluster) -> None:
    try:
        res = orch("node", "label", "node3", "zone=a", "rack=r1")
        assert res.stdout.splitlines() == [
            "node/node3 label zone=a set",
            "node/node3 label rack=r1 set",
        ]
        assert node(orch, "node3")["labels"] == {"rack": "r1", "zone": "a"}

        res = orch("node", "label", "node3", "rack-")
        assert res.stdout.strip() == "node/node3 label rack removed"
        assert node(orch, "node3")["labels"] == {"zone": "a"}

        bad = orch("node", "label", "node3", "bad_=x", check=False)
        assert bad.returncode == 1
        assert bad.stderr.startswith("orch: add_labels.bad_: invalid label key 'bad_'")
    finally:
        orch("node", "label", "node3", "zone-", "rack-", check=False)
    assert node(orch, "node3")["labels"] == {}


def test_rm_refuses_a_ready_node(orch, cluster) -> None:
    res = orch("node", "rm", "node1", check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "orch: node node1 is ready; only a down node can be removed "
        "(drain it and stop its agent first, or use --force)"
    )
    assert node(orch, "node1")["status"] == "ready"

    missing = orch("node", "rm", "nosuchnode", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "orch: no such node: nosuchnode"


def test_inspect_node_alias(orch, cluster) -> None:
    inspected = orch("node", "inspect", "node2", "-o", "json")
    same = orch("inspect", "node", "node2", "-o", "json")
    assert inspected.stdout == same.stdout
    assert '"hostname": "node2"' in inspected.stdout
