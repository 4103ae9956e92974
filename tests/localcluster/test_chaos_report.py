"""The chaos report's history (localcluster/chaos.py slot_history): what a failed settle
says about each slot, from the tasks and nodes as the Control API lists them. Pure."""

from __future__ import annotations

from orch.localcluster.chaos import slot_history
from orch.proto import objects_pb2, types_pb2

NOW = 1_000_000.0


def service(name: str) -> objects_pb2.Service:
    return objects_pb2.Service(id=f"{name}-id", spec={"name": name, "replicas": 2})


def task(tid: str, slot: int, created: float, state: int, **status) -> objects_pb2.Task:
    t = objects_pb2.Task(
        id=tid,
        service_id="web-id",
        service_name="web",
        slot=slot,
        node_id="n1",
        desired_state=types_pb2.RUNNING,
        status=objects_pb2.TaskStatus(state=state, **status),
    )
    t.meta.created_at.FromMicroseconds(int(created * 1e6))
    t.status.timestamp.FromMicroseconds(int((created + 1) * 1e6))
    return t


def test_each_slot_lists_its_tasks_oldest_first_with_state_reason_and_node() -> None:
    node = objects_pb2.Node(id="n1", description={"hostname": "node1"})
    node.status.state = types_pb2.NODE_READY
    node.status.manager = "m0"
    node.status.timestamp.FromMicroseconds(int((NOW - 30) * 1e6))
    newer = task("bbb", 2, NOW - 10, types_pb2.PENDING, err="no suitable node (1 node): 1 down")
    older = task("aaa", 2, NOW - 20, types_pb2.ORPHANED, message="node n1 is down")
    other = task("ccc", 1, NOW - 5, types_pb2.RUNNING)
    stranger = task("ddd", 1, NOW - 5, types_pb2.RUNNING)
    stranger.service_id = "gone-id"  # a task of a service no longer listed: left out

    history = slot_history([service("web")], [newer, other, older, stranger], [node], NOW)

    assert list(history) == ["web.1", "web.2", "nodes"]
    assert [line.split(" ")[0] for line in history["web.2"]] == ["aaa", "bbb"]
    assert history["web.2"][1] == (
        "bbb on node1: desired RUNNING, PENDING since 9.0s ago, health HEALTH_UNSPECIFIED, "
        "created 10.0s ago, restarts 0, err 'no suitable node (1 node): 1 down'"
    )
    assert "message 'node n1 is down'" in history["web.2"][0]
    assert history["nodes"] == ["node1: NODE_READY since 30.0s ago, session on m0"]
