"""Which manager can reach a task's node, and which task an `orch exec` target means.

Logs and exec travel down the agent's session, and a node's session lives on exactly one
manager. Any manager must serve `orch logs` and `orch exec` all the same (the CLI talks to
whichever answers), so each request is split by node: tasks whose node's session this
manager holds are served here, the others go to the manager that holds it. Who holds a
session is in etcd: the liveness record the dispatcher writes on Register carries the
holder's id in ``status.manager`` (a field, not a message to parse), and the holder's
address is in its presence record (presence.py). Both live on leases, so a dead manager
or a dead session drops out by itself.

Pure functions over plain data; the shell that forwards and merges is forwarding.py.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orch import model
from orch.errors import NotFoundError, PreconditionError, ValidationError
from orch.proto import objects_pb2, types_pb2

SHORT_ID = 12  # how many characters of an id a person reads (`orch ps`)


class TargetError(PreconditionError):
    """The task cannot be reached for logs or exec now: it is not running, or its node has
    no session on any manager (retrying later may work)."""


@dataclass
class Routes:
    """A request split by where its tasks' nodes hold their sessions."""

    local: dict[str, list[objects_pb2.Task]] = field(default_factory=dict)
    """Node id -> its tasks, for nodes whose session this manager holds."""
    remote: dict[str, list[objects_pb2.Task]] = field(default_factory=dict)
    """Manager address -> tasks of the nodes whose sessions that manager holds."""
    unreachable: dict[str, str] = field(default_factory=dict)
    """Node id -> why no manager can reach it (one line, naming the node)."""


def plan_routes(
    tasks: Iterable[objects_pb2.Task],
    *,
    self_id: str,
    local_nodes: Collection[str],
    holders: Mapping[str, str],
    managers: Mapping[str, str],
    hostnames: Mapping[str, str],
) -> Routes:
    """Split ``tasks`` (each with a node) by the manager holding its node's session.

    ``local_nodes``: nodes whose session this manager (``self_id``) holds now;
    ``holders``: node id -> id of the manager its liveness record names; ``managers``:
    manager id -> address of every manager present; ``hostnames``: node id -> hostname,
    for messages."""
    routes = Routes()
    for task in tasks:
        node = task.node_id
        if node in local_nodes:
            routes.local.setdefault(node, []).append(task)
            continue
        holder = holders.get(node, "")
        name = hostnames.get(node) or node[:SHORT_ID]
        if not holder:
            routes.unreachable[node] = f"node {name} is not connected to any manager"
        elif holder == self_id:
            # The record still names us, but the session just ended; the agent is
            # reconnecting (maybe to another manager).
            routes.unreachable[node] = f"node {name} has just lost its session; retry shortly"
        elif holder not in managers:
            routes.unreachable[node] = (
                f"node {name}'s session is with manager {holder}, which is not up"
            )
        else:
            routes.remote.setdefault(managers[holder], []).append(task)
    return routes


def task_name(task: objects_pb2.Task) -> str:
    """``abcdef012345 (web.2)``: how errors name a task."""
    return f"{task.id[:SHORT_ID]} ({task.service_name}.{task.slot})"


def is_running(task: objects_pb2.Task) -> bool:
    """Its container runs (as the agent last reported)."""
    return bool(task.node_id) and task.status.state == types_pb2.RUNNING


def not_running(task: objects_pb2.Task) -> TargetError:
    state = model.state_name(task.status.state)
    return TargetError(f"task {task_name(task)} is not running (state: {state})")


def exec_task(
    target: str, *, services: Collection[str], tasks: Sequence[objects_pb2.Task]
) -> objects_pb2.Task:
    """The task an `orch exec` target means: a service name -> its running task of the
    lowest slot (tasks still desired to run first); "service.slot" -> that slot's running
    task; else a task id or unique id prefix. Raises NotFoundError when nothing matches,
    ValidationError for an ambiguous prefix, TargetError when the task is not running."""
    if target in services:
        mine = [t for t in tasks if t.service_name == target]
        running = [t for t in mine if is_running(t)]
        if not running:
            raise TargetError(f"service {target} has no running task")
        return min(running, key=lambda t: (t.desired_state != types_pb2.RUNNING, t.slot))
    name, _, slot = target.rpartition(".")
    if name and slot.isdigit() and name in services:
        in_slot = [t for t in tasks if t.service_name == name and t.slot == int(slot)]
        if not in_slot:
            raise NotFoundError(f"service {name} has no task in slot {slot}")
        newest_first = sorted(in_slot, key=_created, reverse=True)
        running = [t for t in newest_first if is_running(t)]
        if not running:
            raise not_running(newest_first[0])
        return running[0]
    exact = [t for t in tasks if t.id == target]
    matches = exact or [t for t in tasks if target and t.id.startswith(target)]
    if not matches:
        raise NotFoundError(f"no such service or task: {target}")
    if len(matches) > 1:
        raise ValidationError(f"task id {target!r} is ambiguous ({len(matches)} match)")
    if not is_running(matches[0]):
        raise not_running(matches[0])
    return matches[0]


def _created(task: objects_pb2.Task) -> tuple[int, int]:
    return (task.meta.created_at.seconds, task.meta.created_at.nanos)
