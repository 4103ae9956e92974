"""Placement on a real 3-host cluster, through the `orch` CLI: nodes labelled with zones
(`orch node label`), a constraint keeps tasks on matching nodes, spread over the zone label
balances zones rather than nodes, max_replicas_per_node caps each node, and a constraint
no node meets leaves tasks pending with the reason in `orch ps`, until a label makes a
node match. A bad constraint is refused before anything is sent, with file:line.

Zones: node1 and node2 are in zone a, node3 in zone b. Every test removes its service;
the module removes the labels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import wait_until

pytestmark = pytest.mark.integration

CLUSTER_NODES = 3

SERVICE = """
apiVersion: orch/v1
kind: Service
metadata: {name: NAME}
spec:
  image: REGISTRY/busybox:latest
  command: [sleep, "100000"]
  replicas: REPLICAS
  stop_grace_period: 100ms
  placement:
PLACEMENT
"""


@pytest.fixture(scope="module", autouse=True)
def zones(orch, cluster):
    orch("node", "label", "node1", "zone=a")
    orch("node", "label", "node2", "zone=a")
    orch("node", "label", "node3", "zone=b")
    try:
        yield
    finally:
        for host in ("node1", "node2", "node3"):
            orch("node", "label", host, "zone-", check=False)


@pytest.fixture
def apply(orch, cluster, tmp_path):
    """Applies a sleeper service with the given placement lines; removes it afterwards."""
    made: list[str] = []

    def make(name: str, replicas: int, placement: str) -> None:
        text = SERVICE.replace("NAME", name).replace("REPLICAS", str(replicas))
        text = text.replace("REGISTRY", cluster.record.registry)
        text = text.replace("PLACEMENT", "\n".join("    " + line for line in placement.split("\n")))
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        orch("apply", "-f", str(path))
        made.append(name)

    try:
        yield make
    finally:
        for name in made:
            orch("rm", name, check=False)
        for name in made:
            wait_until(lambda n=name: not orch.tasks_left(n), 60, what=f"{name}'s tasks gone")


def pending(orch, service: str) -> list[dict]:
    return [t for t in orch.tasks(service) if t["state"] == "pending" and not t["node"]]


def test_constraint_keeps_tasks_in_zone_a(orch, apply) -> None:
    apply("inza", 4, "constraints: [node.labels.zone==a]")
    placed = wait_until(
        lambda: sum(orch.per_host("inza").values()) == 4 and orch.per_host("inza"), 90
    )
    assert placed == {"node1": 2, "node2": 2}


def test_spread_over_zones_balances_zones_not_nodes(orch, apply) -> None:
    apply("spread", 4, "preferences:\n  - spread: node.labels.zone")
    placed = wait_until(
        lambda: sum(orch.per_host("spread").values()) == 4 and orch.per_host("spread"), 90
    )
    # Zone b has one node, zone a two: an even spread over nodes would give node3 one task.
    assert placed["node3"] == 2
    assert placed["node1"] + placed["node2"] == 2


def test_max_replicas_per_node_leaves_the_rest_pending_with_the_reason(orch, apply) -> None:
    apply("capped", 4, "max_replicas_per_node: 1")
    wait_until(lambda: len(orch.running("capped")) == 3, 90, what="3 capped running")
    assert orch.per_host("capped") == {"node1": 1, "node2": 1, "node3": 1}
    (waiting,) = wait_until(lambda: pending(orch, "capped"), 30, what="one pending")
    assert waiting["reason"] == "no suitable node (3 nodes): 3 at max_replicas_per_node (1)"


def test_impossible_constraint_pends_with_a_readable_reason_until_a_node_matches(
    orch, apply
) -> None:
    apply("nowhere", 2, "constraints: [node.labels.zone==c]")
    reason = "no suitable node (3 nodes): 3 not matching constraint node.labels.zone==c"
    wait_until(
        lambda: [t["reason"] for t in pending(orch, "nowhere")] == [reason, reason],
        30,
        what="two pending tasks with the reason",
    )
    table = orch("ps", "nowhere").stdout
    assert table.count(reason) == 2, table  # whole, in the REASON column
    try:
        orch("node", "label", "node3", "zone=c")
        placed = wait_until(
            lambda: len(orch.running("nowhere")) == 2 and orch.per_host("nowhere"), 60
        )
        assert placed == {"node3": 2}
    finally:
        orch("node", "label", "node3", "zone=b")


def test_a_bad_constraint_is_refused_with_file_and_line(orch, cluster, tmp_path: Path) -> None:
    text = SERVICE.replace("NAME", "bad").replace("REPLICAS", "1")
    text = text.replace("REGISTRY", cluster.record.registry)
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("PLACEMENT", "    constraints: [node.labels.zone=a, node.foo==x]"))
    res = orch("apply", "-f", str(path), check=False)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert any(
        f"{path}:11: spec.placement.constraints[0]: expected '==' or '!=' in "
        "'node.labels.zone=a'; did you mean 'node.labels.zone==a'?" in line
        for line in lines
    ), res.stderr
    assert any(
        f"{path}:11: spec.placement.constraints[1]: unknown attribute 'node.foo'" in line
        for line in lines
    ), res.stderr
    assert not any(s["name"] == "bad" for s in orch.json("ls"))
