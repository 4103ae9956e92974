"""The node monitor's pure decisions: which nodes go DOWN given their liveness records,
their statuses, the new leader's grace period and the time; which tasks get orphaned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orch.manager.nodes.core import MonitorPlan, decide, orphan, orphans
from orch.proto import objects_pb2
from orch.proto import types_pb2 as T

T0 = datetime(2025, 1, 1, tzinfo=UTC)
AFTER_GRACE = dict(now=T0 + timedelta(seconds=3), grace_until=T0 + timedelta(seconds=2))


def test_ready_or_disconnected_node_without_liveness_goes_down() -> None:
    statuses = {"a": T.NODE_READY, "b": T.NODE_DISCONNECTED, "c": T.NODE_READY}
    assert decide(statuses, {"c"}, **AFTER_GRACE) == MonitorPlan(down=["a", "b"])


def test_node_with_liveness_stays_whatever_its_status() -> None:
    statuses = {"a": T.NODE_READY, "b": T.NODE_DISCONNECTED}
    assert decide(statuses, {"a", "b"}, **AFTER_GRACE) == MonitorPlan()


def test_down_or_unknown_status_is_left_alone() -> None:
    statuses = {"a": T.NODE_DOWN, "b": T.NODE_STATUS_UNSPECIFIED}
    assert decide(statuses, set(), **AFTER_GRACE) == MonitorPlan()


def test_liveness_of_a_node_without_node_object_changes_nothing() -> None:
    assert decide({}, {"ghost"}, **AFTER_GRACE) == MonitorPlan()


def test_new_leader_waits_for_the_grace_period_then_decides() -> None:
    statuses = {"a": T.NODE_READY, "b": T.NODE_READY}
    grace_until = T0 + timedelta(seconds=2)
    during = decide(statuses, {"b"}, now=T0 + timedelta(seconds=1), grace_until=grace_until)
    assert during == MonitorPlan(down=[], wake_at=grace_until)
    at_end = decide(statuses, {"b"}, now=grace_until, grace_until=grace_until)
    assert at_end == MonitorPlan(down=["a"])


def test_no_wake_when_nothing_is_lost_during_grace() -> None:
    plan = decide({"a": T.NODE_READY}, {"a"}, now=T0, grace_until=T0 + timedelta(seconds=2))
    assert plan == MonitorPlan()


def _task(task_id: str, node: str, state: int) -> objects_pb2.Task:
    task = objects_pb2.Task(id=task_id, node_id=node, desired_state=T.RUNNING)
    task.status.state = state
    task.status.exit_code = 3
    return task


def test_orphans_are_the_unfinished_tasks_of_down_nodes() -> None:
    tasks = [
        _task("run", "down", T.RUNNING),
        _task("assigned", "down", T.ASSIGNED),
        _task("done", "down", T.COMPLETE),
        _task("failed", "down", T.FAILED),
        _task("elsewhere", "up", T.RUNNING),
        _task("unplaced", "", T.PENDING),
    ]
    assert [t.id for t in orphans(tasks, {"down"})] == ["run", "assigned"]


def test_orphan_sets_the_status_and_keeps_the_rest() -> None:
    task = _task("t", "n1", T.RUNNING)
    task.status.started_at.FromDatetime(T0)
    out = orphan(task, T0 + timedelta(seconds=5))
    assert out.status.state == T.ORPHANED and "n1" in out.status.message
    assert out.status.exit_code == 3 and out.status.started_at == task.status.started_at
    assert out.status.finished_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=5)
    assert out.desired_state == T.RUNNING  # the orchestrator, not the monitor, shuts it down
    assert task.status.state == T.RUNNING  # a copy
