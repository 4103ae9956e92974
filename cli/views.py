"""Pure conversions from Control API messages to what the CLI prints.

Every listing goes proto -> record -> output: a *record* is a plain dict of JSON types
(the stable contract of ``-o json`` and ``-o yaml``, which scripts and tests read), and a
table row is derived from the record, never from the proto, so the table and the JSON
cannot disagree. Enum values become lowercase names ("running", "healthy"), timestamps
RFC 3339 strings in UTC, and an unset timestamp None. Nothing here does IO or reads the
clock: ``now`` is passed in.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from orch.proto import control_pb2, objects_pb2, specs_pb2, types_pb2

TaskState = types_pb2.TaskState

# States in which the container has run and ended, so its exit code means something.
_EXITED = {TaskState.COMPLETE, TaskState.FAILED, TaskState.SHUTDOWN}

_HEALTH = {
    types_pb2.HEALTH_UNSPECIFIED: "none",
    types_pb2.HEALTH_NONE: "none",
    types_pb2.HEALTH_STARTING: "starting",
    types_pb2.HEALTH_HEALTHY: "healthy",
    types_pb2.HEALTH_UNHEALTHY: "unhealthy",
}

_NODE_STATUS = {
    types_pb2.NODE_STATUS_UNSPECIFIED: "unknown",
    types_pb2.NODE_READY: "ready",
    types_pb2.NODE_DOWN: "down",
    types_pb2.NODE_DISCONNECTED: "disconnected",
}

_AVAILABILITY = {
    types_pb2.AVAILABILITY_UNSPECIFIED: "active",  # treated as ACTIVE, per types.proto
    types_pb2.ACTIVE: "active",
    types_pb2.PAUSE: "pause",
    types_pb2.DRAIN: "drain",
}

ID_WIDTH = 12
"""Task ids in tables are cut to this many characters, as docker does."""

ERROR_WIDTH = 60
"""Errors in tables are cut to this many characters unless --no-trunc."""


# -- time ---------------------------------------------------------------------------------


def ts_to_datetime(ts: Timestamp) -> datetime | None:
    """The timestamp as an aware UTC datetime; None when unset (the epoch)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def format_rfc3339(when: datetime | None) -> str | None:
    """``2024-05-01T12:00:03.250000Z`` (microseconds only when not zero)."""
    if when is None:
        return None
    when = when.astimezone(UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}"
    return text + "Z"


def ts_to_rfc3339(ts: Timestamp) -> str | None:
    return format_rfc3339(ts_to_datetime(ts))


def parse_rfc3339(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


def human_duration(seconds: float) -> str:
    """A duration the way docker prints ages: "3 seconds", "about a minute", "2 hours"."""
    s = int(seconds)
    if s < 1:
        return "less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "about a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(s / 3600 + 0.5)
    if hours == 1:
        return "about an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def relative_time(when: str | datetime | None, now: datetime) -> str:
    """ "12 seconds ago"; "" for no time. A time ahead of ``now`` (clock skew between
    hosts) reads as "less than a second ago" rather than as a negative age."""
    then = parse_rfc3339(when) if isinstance(when, str) or when is None else when
    if then is None:
        return ""
    return f"{human_duration(max(0.0, (now - then).total_seconds()))} ago"


# -- enum names ---------------------------------------------------------------------------


def task_state_name(state: int) -> str:
    """ "running", "shutdown"...; "unknown" for an unset state."""
    if state == TaskState.TASK_STATE_UNSPECIFIED:
        return "unknown"
    return TaskState.Name(state).lower()


def health_name(health: int) -> str:
    return _HEALTH.get(health, "unknown")


def node_status_name(status: int) -> str:
    return _NODE_STATUS.get(status, "unknown")


def availability_name(availability: int) -> str:
    return _AVAILABILITY.get(availability, "unknown")


# -- records ------------------------------------------------------------------------------


def task_record(task: objects_pb2.Task, hostnames: Mapping[str, str]) -> dict[str, Any]:
    """One task as ``orch ps -o json`` prints it. ``hostnames`` maps node id -> hostname.

    ``exit_code`` is None unless the container ran and ended (complete, failed, shutdown).
    """
    status = task.status
    return {
        "id": task.id,
        "service": task.service_name,
        "slot": task.slot,
        "node": task.node_id,
        "node_hostname": hostnames.get(task.node_id, "") if task.node_id else "",
        "desired_state": task_state_name(task.desired_state),
        "state": task_state_name(status.state),
        "state_since": ts_to_rfc3339(status.timestamp),
        "health": health_name(status.health),
        "addresses": [a for att in task.attachments for a in att.addresses],
        "attachments": [
            {"network": att.network, "addresses": list(att.addresses), "mac": att.mac}
            for att in task.attachments
        ],
        "ports": [port_text(p) for p in task.ports],
        "exit_code": status.exit_code if status.state in _EXITED else None,
        "reason": waiting_reason(task) or end_reason(task),
        "error": status.err,
        "message": status.message,
        "image": task.container.image,
        "service_version": task.service_version,
        "restart_count": task.restart_count,
        "created_at": ts_to_rfc3339(task.meta.created_at),
        "updated_at": ts_to_rfc3339(task.meta.updated_at),
    }


def waiting_reason(task: objects_pb2.Task) -> str:
    """Why a task meant to run has no node yet, as the scheduler wrote it ("no suitable
    node (3 nodes): 3 not matching constraint node.labels.zone==c"); "" otherwise."""
    status = task.status
    if task.node_id or task.desired_state != TaskState.RUNNING:
        return ""
    return status.err if status.state in (TaskState.NEW, TaskState.PENDING) else ""


def end_reason(task: objects_pb2.Task) -> str:
    """Why the task ended, short enough to read at a glance in `orch ps -a` (why its slot
    restarted): "exit 1", "OOM killed", "unhealthy", "node down", "shutdown"...; "" while
    it has not ended. The error column says more."""
    status = task.status
    state = status.state
    if state == TaskState.COMPLETE:
        return f"exit {status.exit_code}"
    if state == TaskState.SHUTDOWN:
        return "shutdown"
    if state == TaskState.ORPHANED:
        return "node down"
    if state == TaskState.REJECTED:
        return "rejected"
    if state != TaskState.FAILED:
        return ""
    if status.health == types_pb2.HEALTH_UNHEALTHY:
        return "unhealthy"
    if status.oom_killed:
        return "OOM killed"
    if status.exit_code:
        return _exit_text(status.exit_code)
    if status.err == "container disappeared":
        return "container lost"
    if not status.HasField("started_at"):
        return "start failed"
    return "failed"


def _exit_text(code: int) -> str:
    """ "exit 1"; "exit 137 (SIGKILL)" for a process killed by a signal."""
    if 128 < code < 128 + 65:
        try:
            return f"exit {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit {code}"


def port_text(port: specs_pb2.PortConfig) -> str:
    """ "8080->80/tcp", as docker prints a published port."""
    return f"{port.published}->{port.target}/{port.protocol or 'tcp'}"


def network_record(info: control_pb2.NetworkInfo) -> dict[str, Any]:
    """One network as ``orch network ls -o json`` prints it."""
    network = info.network
    return {
        "id": network.id,
        "name": network.spec.name,
        "driver": network.spec.driver or "overlay",
        "subnet": network.subnet,
        "gateway": network.gateway,
        "vni": network.vni,
        "labels": dict(sorted(network.spec.labels.items())),
        "services": list(info.services),
        "endpoints": info.endpoints,
        "created_at": ts_to_rfc3339(network.meta.created_at),
    }


def service_record(info: control_pb2.ServiceInfo) -> dict[str, Any]:
    """One service as ``orch ls -o json`` prints it."""
    service = info.service
    return {
        "id": service.id,
        "name": service.spec.name,
        "image": service.spec.container.image,
        "mode": "global" if service.spec.mode == specs_pb2.GLOBAL else "replicated",
        "replicas_desired": service.spec.replicas,
        "replicas_running": info.replicas_running,
        "networks": [n.target for n in service.spec.networks],
        "ports": [port_text(p) for p in service.spec.ports],
        "version": service.meta.version,
        "created_at": ts_to_rfc3339(service.meta.created_at),
        "updated_at": ts_to_rfc3339(service.meta.updated_at),
    }


def node_record(node: objects_pb2.Node) -> dict[str, Any]:
    """One node as ``orch nodes -o json`` prints it. ``labels`` are the user's (spec),
    ``engine_labels`` those the agent reports."""
    desc = node.description
    return {
        "id": node.id,
        "hostname": desc.hostname,
        "addr": desc.addr,
        "status": node_status_name(node.status.state),
        "status_message": node.status.message,
        "status_since": ts_to_rfc3339(node.status.timestamp),
        "availability": availability_name(node.spec.availability),
        "labels": dict(sorted(node.spec.labels.items())),
        "engine_labels": dict(sorted(desc.labels.items())),
        "resources": {
            "nano_cpus": desc.resources.nano_cpus,
            "memory_bytes": desc.resources.memory_bytes,
        },
        "platform": desc.platform,
        "runtime": desc.runtime,
        "manager": node.status.manager,
        "created_at": ts_to_rfc3339(node.meta.created_at),
        "updated_at": ts_to_rfc3339(node.meta.updated_at),
    }


# -- tables -------------------------------------------------------------------------------

Table = tuple[list[str], list[list[str]]]


def sort_task_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """By service and slot; within a slot the task desired to run first, then the rest
    newest first (the history of the slot, as `docker service ps` shows it)."""

    def key(r: Mapping[str, Any]) -> tuple[Any, ...]:
        slot_key = (r["slot"], "") if r["slot"] else (0, r["node"])
        current = 0 if r["desired_state"] == "running" else 1
        created = parse_rfc3339(r["created_at"])
        age = -created.timestamp() if created else 0.0
        return (r["service"], *slot_key, current, age, r["id"])

    return sorted(records, key=key)


def task_name(record: Mapping[str, Any]) -> str:
    """ "web.2"; a task without a slot (one per node) is named by its short id."""
    slot = record["slot"] or record["id"][:ID_WIDTH]
    return f"{record['service']}.{slot}"


def task_table(
    records: Sequence[Mapping[str, Any]], now: datetime, *, truncate: bool = True
) -> Table:
    """ID NAME NODE DESIRED STATE HEALTH ADDRESS PORTS REASON ERROR. Older tasks of a slot
    follow its current one, their names marked with ``\\_`` like docker's; REASON says why
    a task ended ("exit 1", "unhealthy", "node down": why its slot restarted)."""
    headers = [
        "ID", "NAME", "NODE", "DESIRED", "STATE", "HEALTH", "ADDRESS", "PORTS", "REASON", "ERROR"
    ]  # fmt: skip
    rows = []
    previous_name = None
    for r in sort_task_records(records):
        name = task_name(r)
        shown_name = f"\\_ {name}" if name == previous_name else name
        previous_name = name
        since = relative_time(r["state_since"], now)
        # A waiting task's reason is its error, shown whole in REASON (it says what to fix).
        error = "" if r["error"] == r["reason"] else r["error"]
        if truncate and len(error) > ERROR_WIDTH:
            error = error[: ERROR_WIDTH - 1] + "…"
        rows.append(
            [
                r["id"][:ID_WIDTH] if truncate else r["id"],
                shown_name,
                r["node_hostname"] or r["node"][:ID_WIDTH],
                r["desired_state"],
                f"{r['state']} {since}" if since else r["state"],
                r["health"],
                ",".join(r["addresses"]),
                ",".join(r["ports"]),
                r["reason"],
                error,
            ]
        )
    return headers, rows


def service_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """NAME IMAGE REPLICAS (running/desired; running and "global" for a global service)
    PORTS."""
    rows = [
        [
            r["name"],
            r["image"],
            f"{r['replicas_running']} (global)"
            if r.get("mode") == "global"
            else f"{r['replicas_running']}/{r['replicas_desired']}",
            ",".join(r["ports"]),
        ]
        for r in sorted(records, key=lambda r: r["name"])
    ]
    return ["NAME", "IMAGE", "REPLICAS", "PORTS"], rows


def network_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """NAME DRIVER SUBNET VNI SERVICES."""
    rows = [
        [r["name"], r["driver"], r["subnet"], str(r["vni"]), ",".join(r["services"])]
        for r in sorted(records, key=lambda r: r["name"])
    ]
    return ["NAME", "DRIVER", "SUBNET", "VNI", "SERVICES"], rows


def manager_records(response: control_pb2.ListManagersResponse) -> list[dict[str, Any]]:
    """Managers as ``orch managers -o json`` prints them."""
    return [
        {
            "id": m.id,
            "addr": m.addr,
            "leader": m.id == response.leader,
            "started_at": ts_to_rfc3339(m.started_at),
        }
        for m in sorted(response.managers, key=lambda m: m.id)
    ]


def manager_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """ID ADDR LEADER."""
    rows = [[r["id"], r["addr"], "leader" if r["leader"] else ""] for r in records]
    return ["ID", "ADDR", "LEADER"], rows


def node_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """ID HOSTNAME ADDR STATUS AVAILABILITY LABELS MESSAGE. The message says why a node
    is not ready ("agent restarting (grace 30s)"); a ready node's is left out."""
    rows = [
        [
            r["id"],
            r["hostname"],
            r["addr"],
            r["status"],
            r["availability"],
            ",".join(f"{k}={v}" for k, v in r["labels"].items()),
            "" if r["status"] == "ready" else r["status_message"],
        ]
        for r in sorted(records, key=lambda r: (r["hostname"], r["id"]))
    ]
    return ["ID", "HOSTNAME", "ADDR", "STATUS", "AVAILABILITY", "LABELS", "MESSAGE"], rows


# -- apply / scale ------------------------------------------------------------------------

_VERBS = {"create": "created", "update": "configured", "unchanged": "unchanged"}


def change_line(change: control_pb2.Change, *, dry_run: bool = False) -> str:
    """ "service/web configured (replicas, container.image)" and the like."""
    line = f"{change.kind}/{change.name} {_VERBS.get(change.action, change.action)}"
    if change.action == "update" and change.fields:
        line += f" ({', '.join(change.fields)})"
    if dry_run:
        line += " (dry run)"
    return line


# What `orch apply -o json` calls the actions of a Change.
_APPLIED = {"create": "created", "update": "updated", "unchanged": "unchanged"}


def apply_record(response: control_pb2.ApplyResponse, *, dry_run: bool) -> dict[str, Any]:
    """An Apply's answer as `orch apply [--dry-run] -o json` prints it: the services and
    networks with what happened to each (created, updated with the fields, unchanged)
    and, for a dry run, the tasks the cluster would start, stop, keep, or leave pending
    (with the reason), and a note when that plan is missing or partial."""

    def changes(kind: str) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "action": _APPLIED.get(c.action, c.action), "changed": list(c.fields)}
            for c in response.changes
            if c.kind == kind
        ]

    tasks = [
        {
            "service": t.service,
            "slot": t.slot,
            "node": t.node,
            "action": t.action,
            "reason": t.reason,
            "task_id": t.task_id,
        }
        for t in response.planned_tasks
    ]
    return {
        "dry_run": dry_run,
        "services": changes("service"),
        "networks": changes("network"),
        "tasks": tasks,
        "note": response.plan_note,
    }


def planned_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """SERVICE SLOT NODE ACTION REASON: a dry run's tasks (slot "-" for a global task)."""
    rows = [
        [r["service"], str(r["slot"] or "-"), r["node"] or "-", r["action"], r["reason"]]
        for r in records
    ]
    return ["SERVICE", "SLOT", "NODE", "ACTION", "REASON"], rows


# -- inspect ------------------------------------------------------------------------------


def message_to_plain(message: Message) -> dict[str, Any]:
    """Any API object as plain data for ``orch inspect``: proto field names, only the
    fields that are set, enums by name, timestamps RFC 3339, durations "1.5s", and 64-bit
    integers as numbers (protobuf's own JSON form would quote them)."""
    plain: dict[str, Any] = {}
    for field, value in message.ListFields():
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            plain[field.name] = {k: _value(value_field, value[k]) for k in sorted(value)}
        elif field.is_repeated:
            plain[field.name] = [_value(field, v) for v in value]
        else:
            plain[field.name] = _value(field, value)
    return plain


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        full_name = field.message_type.full_name
        if full_name == "google.protobuf.Timestamp":
            return ts_to_rfc3339(value)
        if full_name == "google.protobuf.Duration":
            return f"{value.seconds + value.nanos / 1e9:g}s"
        return message_to_plain(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.decode("utf-8", "backslashreplace")
    return value
