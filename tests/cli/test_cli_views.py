"""views.py: proto -> records (the -o json contract) -> table rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from orch.cli import views
from orch.proto import control_pb2, objects_pb2, specs_pb2, types_pb2

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def stamp(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def task(
    task_id: str = "abcdef0123456789abcdef012",
    *,
    slot: int = 2,
    state: int = types_pb2.RUNNING,
    desired: int = types_pb2.RUNNING,
    created: datetime = T0,
    **status: object,
) -> objects_pb2.Task:
    return objects_pb2.Task(
        id=task_id,
        meta=objects_pb2.Meta(
            created_at=stamp(created), updated_at=stamp(created + timedelta(seconds=5))
        ),
        service_name="web",
        slot=slot,
        node_id="node-id-1",
        desired_state=desired,
        container=specs_pb2.ContainerSpec(image="reg:5000/web:2"),
        service_version=4,
        restart_count=1,
        status=objects_pb2.TaskStatus(state=state, timestamp=stamp(created), **status),
        attachments=[
            objects_pb2.NetworkAttachment(network="front", addresses=["10.0.1.5/24"]),
            objects_pb2.NetworkAttachment(network="back", addresses=["10.0.2.7/24", "fd00::7/64"]),
        ],
    )


TASK_KEYS = {
    "id",
    "service",
    "slot",
    "node",
    "node_hostname",
    "desired_state",
    "state",
    "health",
    "addresses",
    "exit_code",
    "error",
    "message",
    "created_at",
    "updated_at",
    "restart_count",
}


def test_task_record_contract() -> None:
    record = views.task_record(
        task(health=types_pb2.HEALTH_STARTING, message="started"), {"node-id-1": "node1"}
    )
    assert TASK_KEYS <= set(record)
    assert record["id"] == "abcdef0123456789abcdef012"
    assert (record["service"], record["slot"]) == ("web", 2)
    assert (record["node"], record["node_hostname"]) == ("node-id-1", "node1")
    assert (record["desired_state"], record["state"], record["health"]) == (
        "running",
        "running",
        "starting",
    )
    assert record["addresses"] == ["10.0.1.5/24", "10.0.2.7/24", "fd00::7/64"]
    assert record["exit_code"] is None  # still running: no exit code to speak of
    assert record["created_at"] == "2024-05-01T12:00:00Z"
    assert record["updated_at"] == "2024-05-01T12:00:05Z"
    assert record["restart_count"] == 1
    assert record["message"] == "started"


@pytest.mark.parametrize(
    ("state", "exit_code", "expected"),
    [
        (types_pb2.FAILED, 3, 3),
        (types_pb2.COMPLETE, 0, 0),
        (types_pb2.SHUTDOWN, 143, 143),
        (types_pb2.REJECTED, 0, None),
        (types_pb2.STARTING, 0, None),
    ],
)
def test_exit_code_only_after_the_container_ended(state: int, exit_code: int, expected) -> None:
    assert views.task_record(task(state=state, exit_code=exit_code), {})["exit_code"] == expected


def test_enum_names() -> None:
    assert views.task_state_name(types_pb2.TASK_STATE_UNSPECIFIED) == "unknown"
    assert views.task_state_name(types_pb2.PREPARING) == "preparing"
    assert [views.health_name(h) for h in range(5)] == [
        "none",
        "none",
        "starting",
        "healthy",
        "unhealthy",
    ]
    assert views.node_status_name(types_pb2.NODE_DOWN) == "down"
    assert views.availability_name(types_pb2.AVAILABILITY_UNSPECIFIED) == "active"
    assert views.availability_name(types_pb2.DRAIN) == "drain"


def test_unset_times_are_none() -> None:
    record = views.task_record(objects_pb2.Task(id="x"), {})
    assert record["created_at"] is None and record["state_since"] is None
    assert record["node_hostname"] == ""


def test_rfc3339_keeps_microseconds_and_round_trips() -> None:
    when = T0 + timedelta(microseconds=250_000)
    text = views.ts_to_rfc3339(stamp(when))
    assert text == "2024-05-01T12:00:00.250000Z"
    assert views.parse_rfc3339(text) == when


def test_service_record_contract() -> None:
    info = control_pb2.ServiceInfo(
        service=objects_pb2.Service(
            id="s1",
            meta=objects_pb2.Meta(version=7, created_at=stamp(T0), updated_at=stamp(T0)),
            spec=specs_pb2.ServiceSpec(
                name="web", replicas=5, container=specs_pb2.ContainerSpec(image="img:1")
            ),
        ),
        replicas_running=3,
    )
    record = views.service_record(info)
    assert {
        k: record[k] for k in ("name", "image", "replicas_desired", "replicas_running", "version")
    } == {
        "name": "web",
        "image": "img:1",
        "replicas_desired": 5,
        "replicas_running": 3,
        "version": 7,
    }
    assert record["created_at"] == record["updated_at"] == "2024-05-01T12:00:00Z"
    assert views.service_table([record]) == (
        ["NAME", "IMAGE", "REPLICAS", "PORTS"],
        [["web", "img:1", "3/5", ""]],
    )


def test_node_record_contract() -> None:
    node = objects_pb2.Node(
        id="n1",
        description=objects_pb2.NodeDescription(
            hostname="node1",
            addr="10.99.0.1",
            resources=types_pb2.Resources(nano_cpus=4_000_000_000, memory_bytes=8 << 30),
            labels={"engine": "x"},
        ),
        spec=objects_pb2.NodeSpec(availability=types_pb2.PAUSE, labels={"zone": "a"}),
        status=objects_pb2.NodeState(
            state=types_pb2.NODE_READY, timestamp=Timestamp(seconds=1_700_000_000)
        ),
    )
    record = views.node_record(node)
    assert {
        k: record[k]
        for k in (
            "id",
            "hostname",
            "addr",
            "status",
            "status_since",
            "availability",
            "labels",
            "resources",
        )
    } == {
        "id": "n1",
        "hostname": "node1",
        "addr": "10.99.0.1",
        "status": "ready",
        "status_since": "2023-11-14T22:13:20Z",
        "availability": "pause",
        "labels": {"zone": "a"},
        "resources": {"nano_cpus": 4_000_000_000, "memory_bytes": 8 << 30},
    }
    assert views.node_table([record])[1] == [
        ["n1", "node1", "10.99.0.1", "ready", "pause", "zone=a", ""]
    ]
    restarting = {**record, "status": "disconnected", "status_message": "agent restarting"}
    assert views.node_table([restarting])[1][0][-1] == "agent restarting"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "less than a second"),
        (0.9, "less than a second"),
        (1, "1 second"),
        (12, "12 seconds"),
        (59, "59 seconds"),
        (60, "about a minute"),
        (119, "about a minute"),
        (120, "2 minutes"),
        (3599, "59 minutes"),
        (3600, "about an hour"),
        (2 * 3600, "2 hours"),
        (47 * 3600, "47 hours"),
        (3 * 86400, "3 days"),
        (15 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert views.human_duration(seconds) == text


def test_relative_time() -> None:
    assert (
        views.relative_time("2024-05-01T12:00:00Z", T0 + timedelta(seconds=12)) == "12 seconds ago"
    )
    # A timestamp from a host whose clock runs ahead does not read as a negative age.
    assert views.relative_time(T0 + timedelta(seconds=3), T0) == "less than a second ago"
    assert views.relative_time(None, T0) == ""


def test_task_table_orders_slots_and_marks_history() -> None:
    current = task("cur0000000000000", slot=1, created=T0 + timedelta(seconds=30))
    old = task(
        "old0000000000000",
        slot=1,
        desired=types_pb2.SHUTDOWN,
        state=types_pb2.FAILED,
        exit_code=2,
        err="x" * 100,
        created=T0,
    )
    other = task("oth0000000000000", slot=2, created=T0)
    records = [views.task_record(t, {"node-id-1": "node1"}) for t in (other, old, current)]
    headers, rows = views.task_table(records, T0 + timedelta(seconds=42))
    assert headers == [
        "ID",
        "NAME",
        "NODE",
        "DESIRED",
        "STATE",
        "HEALTH",
        "ADDRESS",
        "PORTS",
        "REASON",
        "ERROR",
    ]
    assert [r[:2] for r in rows] == [
        ["cur000000000", "web.1"],
        ["old000000000", "\\_ web.1"],
        ["oth000000000", "web.2"],
    ]
    assert rows[0][2:9] == [
        "node1",
        "running",
        "running 12 seconds ago",
        "none",
        "10.0.1.5/24,10.0.2.7/24,fd00::7/64",
        "",
        "",
    ]
    assert rows[1][3:5] == ["shutdown", "failed 42 seconds ago"]
    assert rows[1][8] == "exit 2"
    assert len(rows[1][9]) == views.ERROR_WIDTH and rows[1][9].endswith("…")
    _, full = views.task_table(records, T0, truncate=False)
    assert full[1][0] == "old0000000000000" and full[1][9] == "x" * 100


@pytest.mark.parametrize(
    ("change", "dry_run", "line"),
    [
        (
            control_pb2.Change(kind="service", name="web", action="create"),
            False,
            "service/web created",
        ),
        (
            control_pb2.Change(
                kind="service", name="web", action="update", fields=["replicas", "container.image"]
            ),
            False,
            "service/web configured (replicas, container.image)",
        ),
        (
            control_pb2.Change(kind="service", name="web", action="unchanged"),
            False,
            "service/web unchanged",
        ),
        (
            control_pb2.Change(kind="network", name="front", action="create"),
            True,
            "network/front created (dry run)",
        ),
    ],
)
def test_change_line(change: control_pb2.Change, dry_run: bool, line: str) -> None:
    assert views.change_line(change, dry_run=dry_run) == line


def test_message_to_plain() -> None:
    spec = specs_pb2.ServiceSpec(
        name="web",
        labels={"b": "2", "a": "1"},
        replicas=3,
        container=specs_pb2.ContainerSpec(
            image="img",
            command=["sh", "-c"],
            stop_grace_period=Duration(seconds=1, nanos=500_000_000),
        ),
        resources=types_pb2.ResourceRequirements(limits=types_pb2.Resources(memory_bytes=1 << 40)),
        restart_policy=types_pb2.RestartPolicy(condition=types_pb2.RESTART_ON_FAILURE),
        networks=[specs_pb2.NetworkAttachmentConfig(target="front", aliases=["w"])],
    )
    service = objects_pb2.Service(
        id="s1", meta=objects_pb2.Meta(version=2, created_at=stamp(T0)), spec=spec
    )
    assert views.message_to_plain(service) == {
        "id": "s1",
        "meta": {"version": 2, "created_at": "2024-05-01T12:00:00Z"},
        "spec": {
            "name": "web",
            "labels": {"a": "1", "b": "2"},
            "container": {"image": "img", "command": ["sh", "-c"], "stop_grace_period": "1.5s"},
            "replicas": 3,
            "resources": {"limits": {"memory_bytes": 1 << 40}},
            "restart_policy": {"condition": "RESTART_ON_FAILURE"},
            "networks": [{"target": "front", "aliases": ["w"]}],
        },
    }


# -- networks and ports ---------------------------------------------------------------------


def test_ports_and_attachments_in_task_records() -> None:
    t = task()
    t.ports.add(published=8080, target=80, protocol="tcp", mode="host")
    t.ports.add(published=5353, target=53, protocol="udp", mode="host")
    t.attachments[0].mac = "02:42:0a:00:01:05"
    record = views.task_record(t, {})
    assert record["ports"] == ["8080->80/tcp", "5353->53/udp"]
    assert record["attachments"][0] == {
        "network": "front",
        "addresses": ["10.0.1.5/24"],
        "mac": "02:42:0a:00:01:05",
    }
    _, [row] = views.task_table([record], T0)
    assert row[7] == "8080->80/tcp,5353->53/udp"


def test_network_record_and_table() -> None:
    info = control_pb2.NetworkInfo(
        network=objects_pb2.Network(
            id="net1",
            meta=objects_pb2.Meta(created_at=stamp(T0)),
            spec=specs_pb2.NetworkSpec(name="front", driver="overlay", labels={"team": "a"}),
            vni=4096,
            subnet="10.10.0.0/24",
            gateway="10.10.0.1",
        ),
        services=["api", "web"],
        endpoints=3,
    )
    record = views.network_record(info)
    assert record == {
        "id": "net1",
        "name": "front",
        "driver": "overlay",
        "subnet": "10.10.0.0/24",
        "gateway": "10.10.0.1",
        "vni": 4096,
        "labels": {"team": "a"},
        "services": ["api", "web"],
        "endpoints": 3,
        "created_at": "2024-05-01T12:00:00Z",
    }
    assert views.network_table([record]) == (
        ["NAME", "DRIVER", "SUBNET", "VNI", "SERVICES"],
        [["front", "overlay", "10.10.0.0/24", "4096", "api,web"]],
    )


def test_manager_records_mark_the_leader() -> None:
    from orch.cli import views as v
    from orch.proto import control_pb2 as c
    from orch.proto import objects_pb2 as o

    resp = c.ListManagersResponse(
        managers=[o.ManagerInfo(id="m1", addr="a:1"), o.ManagerInfo(id="m0", addr="a:0")],
        leader="m1",
    )
    records = v.manager_records(resp)
    assert [(r["id"], r["leader"]) for r in records] == [("m0", False), ("m1", True)]
    header, rows = v.manager_table(records)
    assert header == ["ID", "ADDR", "LEADER"] and rows[1] == ["m1", "a:1", "leader"]


def test_apply_record_and_planned_table() -> None:
    response = control_pb2.ApplyResponse(
        changes=[
            control_pb2.Change(kind="network", name="front", action="unchanged"),
            control_pb2.Change(kind="service", name="web", action="update", fields=["replicas"]),
        ],
        planned_tasks=[
            control_pb2.PlannedTask(service="web", slot=2, node="h2", action="stop", task_id="t2"),
            control_pb2.PlannedTask(service="agent", node="h1", action="start"),
            control_pb2.PlannedTask(service="db", slot=1, action="pending", reason="no fit"),
        ],
    )
    record = views.apply_record(response, dry_run=True)
    assert record["services"] == [{"name": "web", "action": "updated", "changed": ["replicas"]}]
    assert record["networks"] == [{"name": "front", "action": "unchanged", "changed": []}]
    assert record["tasks"][0] == {
        "service": "web",
        "slot": 2,
        "node": "h2",
        "action": "stop",
        "reason": "",
        "task_id": "t2",
    }
    headers, rows = views.planned_table(record["tasks"])
    assert headers == ["SERVICE", "SLOT", "NODE", "ACTION", "REASON"]
    assert rows == [
        ["web", "2", "h2", "stop", ""],
        ["agent", "-", "h1", "start", ""],  # a global task has no slot
        ["db", "1", "-", "pending", "no fit"],
    ]
