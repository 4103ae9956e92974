"""`orch apply --dry-run` on a running 3-node cluster: the plan names the tasks that would
start and the nodes they would run on, an unplaceable service says why it would wait,
and nothing is written to etcd (its revision and keys are the same before and after)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import etcd_state, wait_until

pytestmark = pytest.mark.integration

CLUSTER_NODES = 3

APP = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "app.yaml"

NOWHERE = """apiVersion: orch/v1
kind: Service
metadata: {{name: nowhere}}
spec:
  replicas: 2
  placement: {{constraints: ["node.labels.zone==nowhere"]}}
  image: {registry}/busybox:latest
  command: [sleep, "1000000"]
"""


@pytest.fixture(scope="module")
def ready(orch) -> list[str]:
    """The hostnames, once every node is ready (registrations write to etcd)."""
    nodes = wait_until(
        lambda: len(n := orch.json("nodes")) == 3 and all(x["status"] == "ready" for x in n) and n,
        60,
        what="3 ready nodes",
    )
    return sorted(n["hostname"] for n in nodes)


def test_dry_run_of_the_example_app_plans_tasks_on_nodes_and_writes_nothing(
    orch, cluster, ready, tmp_path: Path
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(APP.read_text().replace("127.0.0.1:5055", cluster.record.registry))
    before = etcd_state(cluster)

    plan = orch.json("apply", "--dry-run", "-f", str(path))
    table = orch("apply", "--dry-run", "-f", str(path)).stdout

    assert etcd_state(cluster) == before
    assert plan["dry_run"] is True
    assert [(s["name"], s["action"]) for s in plan["services"]] == [
        ("api", "created"),
        ("client", "created"),
    ]
    assert [(n["name"], n["action"]) for n in plan["networks"]] == [("front", "created")]
    started = [(t["service"], t["slot"]) for t in plan["tasks"] if t["action"] == "start"]
    assert started == [("api", 1), ("api", 2), ("api", 3), ("client", 1)]
    # Spread: one api replica per node, each on a node of this cluster.
    assert sorted(t["node"] for t in plan["tasks"] if t["service"] == "api") == ready
    assert "service/api created (dry run)" in table
    rows = [line.split() for line in table.splitlines()]
    assert ["SERVICE", "SLOT", "NODE", "ACTION", "REASON"] in rows
    assert sum(1 for r in rows if r[:1] == ["api"] and r[3:4] == ["start"]) == 3
    assert orch.json("ls") == []


def test_dry_run_of_an_unplaceable_service_shows_the_pending_reason(
    orch, cluster, ready, tmp_path: Path
) -> None:
    path = tmp_path / "nowhere.yaml"
    path.write_text(NOWHERE.format(registry=cluster.record.registry))
    before = etcd_state(cluster)

    plan = orch.json("apply", "--dry-run", "-f", str(path))

    assert etcd_state(cluster) == before
    pending = [t for t in plan["tasks"] if t["service"] == "nowhere"]
    assert [(t["slot"], t["action"], t["node"]) for t in pending] == [
        (1, "pending", ""),
        (2, "pending", ""),
    ]
    assert pending[0]["reason"] == (
        "no suitable node (3 nodes): 3 not matching constraint node.labels.zone==nowhere"
    )
