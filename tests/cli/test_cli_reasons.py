"""`orch ps -a`: why each task of a slot ended, read at a glance (the REASON column)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from orch.cli import views
from orch.proto import control_pb2, objects_pb2, specs_pb2, types_pb2

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def task(state: int, *, started: bool = True, **status: object) -> objects_pb2.Task:
    t = objects_pb2.Task(id="t1", service_name="web", slot=1, node_id="n1")
    t.status.CopyFrom(objects_pb2.TaskStatus(state=state, **status))
    t.meta.created_at.FromDatetime(T0)
    if started:
        t.status.started_at.CopyFrom(Timestamp(seconds=int(T0.timestamp())))
    return t


@pytest.mark.parametrize(
    ("t", "reason"),
    [
        (task(types_pb2.RUNNING), ""),
        (task(types_pb2.PENDING, started=False), ""),
        (task(types_pb2.COMPLETE), "exit 0"),
        (task(types_pb2.FAILED, exit_code=1), "exit 1"),
        (task(types_pb2.FAILED, exit_code=137), "exit 137 (SIGKILL)"),
        (task(types_pb2.FAILED, exit_code=255), "exit 255"),
        (task(types_pb2.FAILED, exit_code=137, oom_killed=True), "OOM killed"),
        (
            task(
                types_pb2.FAILED,
                exit_code=143,
                health=types_pb2.HEALTH_UNHEALTHY,
                err="unhealthy: 3 consecutive http probe failures (last: GET ... -> 500)",
            ),
            "unhealthy",
        ),
        (task(types_pb2.FAILED, started=False, err="no such image"), "start failed"),
        (task(types_pb2.FAILED, err="container disappeared"), "container lost"),
        (task(types_pb2.SHUTDOWN, exit_code=143), "shutdown"),
        (task(types_pb2.ORPHANED), "node down"),
        (task(types_pb2.REJECTED, started=False), "rejected"),
    ],
)
def test_end_reason(t: objects_pb2.Task, reason: str) -> None:
    assert views.end_reason(t) == reason
    assert views.task_record(t, {})["reason"] == reason


def test_history_rows_show_the_reason() -> None:
    unhealthy = task(
        types_pb2.FAILED,
        exit_code=143,
        health=types_pb2.HEALTH_UNHEALTHY,
        err="unhealthy: 3 consecutive http probe failures",
    )
    unhealthy.desired_state = types_pb2.SHUTDOWN
    current = task(types_pb2.RUNNING, health=types_pb2.HEALTH_HEALTHY)
    current.id = "t2"
    current.meta.created_at.FromDatetime(T0.replace(minute=1))
    current.desired_state = types_pb2.RUNNING
    records = [views.task_record(t, {"n1": "host1"}) for t in (unhealthy, current)]
    headers, rows = views.task_table(records, T0.replace(minute=2))
    column = {h: i for i, h in enumerate(headers)}
    assert [(r[column["NAME"]], r[column["HEALTH"]], r[column["REASON"]]) for r in rows] == [
        ("web.1", "healthy", ""),
        ("\\_ web.1", "unhealthy", "unhealthy"),
    ]


def test_a_waiting_task_shows_the_schedulers_reason_whole() -> None:
    waiting = task(
        types_pb2.PENDING,
        started=False,
        err="no suitable node (3 nodes): 3 not matching constraint node.labels.zone==nowhere",
    )
    waiting.node_id = ""
    waiting.desired_state = types_pb2.RUNNING
    record = views.task_record(waiting, {})
    assert record["reason"] == waiting.status.err
    headers, rows = views.task_table([record], T0)
    column = {h: i for i, h in enumerate(headers)}
    assert rows[0][column["REASON"]] == waiting.status.err  # not cut, not repeated
    assert rows[0][column["ERROR"]] == ""
    waiting.desired_state = types_pb2.SHUTDOWN  # no longer waiting: no reason
    assert views.task_record(waiting, {})["reason"] == ""


def test_a_global_service_lists_running_tasks_without_a_desired_count() -> None:
    info = control_pb2.ServiceInfo(replicas_running=3)
    info.service.spec.name = "agent"
    info.service.spec.mode = specs_pb2.GLOBAL
    record = views.service_record(info)
    assert record["mode"] == "global"
    assert views.service_table([record])[1] == [["agent", "", "3 (global)", ""]]
