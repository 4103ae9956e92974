"""The scheduler's decision logic: a pure function that picks a node for each task waiting
for one, or says in one line why no node fits.

Shaped like swarmkit's scheduler: a pipeline of small filters (filter.go), each of which
can say why a node failed it, then a ranking of the nodes that passed: the service's spread
preferences first (the label value with the fewest of its tasks, level by level, nodes
without the label forming one more group, like swarmkit's nodeset tree), then spread the
tasks of one service over nodes, then balance the total. Placements made earlier in the
same call count as load and reservations for later ones, so five replicas on three empty
nodes land 2/2/1. A task of a global service names its node (``target_node``): only that
node is asked, and the reason says why it cannot take the task.
The IO shell (loop.py) writes the decisions back in revision-guarded txns; a
decision is only as good as the snapshot it was made on, which the txn guard checks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from orch import model
from orch.placement import (
    Attribute,
    Constraint,
    PlacementError,
    first_unmet,
    parse_constraints,
    spread_attributes,
)
from orch.proto import objects_pb2, types_pb2

Task = objects_pb2.Task
Node = objects_pb2.Node


@dataclass(frozen=True)
class SchedulerSettings:
    """Tunables of the scheduler."""

    max_tasks_per_node: int = 0
    """At most this many non-terminal tasks on one node; 0 = no limit."""


@dataclass(frozen=True)
class Decision:
    """Where one task goes. node_id None: it fits nowhere now, `reason` says why."""

    task_id: str
    node_id: str | None
    reason: str


@dataclass
class NodeInfo:
    """A node with what is left of it: free resources and the tasks it holds."""

    node: Node
    free_nano_cpus: int
    free_memory_bytes: int
    total_tasks: int = 0
    tasks_by_service: Counter[str] = field(default_factory=Counter)
    host_ports: set[tuple[int, str]] = field(default_factory=set)
    """(published port, protocol) already taken on the node by its tasks."""

    @classmethod
    def of(cls, node: Node) -> NodeInfo:
        capacity = node.description.resources
        return cls(node, capacity.nano_cpus, capacity.memory_bytes)

    @property
    def id(self) -> str:
        return self.node.id

    def add(self, task: Task) -> None:
        """Count a task on this node: its reservations and its load."""
        reserved = task.resources.reservations
        self.free_nano_cpus -= reserved.nano_cpus
        self.free_memory_bytes -= reserved.memory_bytes
        self.total_tasks += 1
        self.tasks_by_service[task.service_id] += 1
        self.host_ports.update(host_ports(task))


def host_ports(task: Task) -> list[tuple[int, str]]:
    """The (port, protocol) pairs a task publishes on its node (mode host)."""
    return [
        (p.published, p.protocol or "tcp")
        for p in task.ports
        if p.published and p.mode in ("", "host")
    ]


def port_label(port: tuple[int, str]) -> str:
    return f"{port[0]}/{port[1]}"


# -- filters -----------------------------------------------------------------------------


class Filter:
    """One reason a node can refuse a task. `check` returns None when the node passes, or
    a short label for the failure ("down", "insufficient memory"); `detail` may add one
    parenthesised remark over all the nodes that failed with that label."""

    def check(self, info: NodeInfo, task: Task) -> str | None:
        raise NotImplementedError

    def detail(self, task: Task, failed: Sequence[NodeInfo]) -> str:
        return ""


class ReadyFilter(Filter):
    """Only nodes with a live agent session take tasks."""

    def check(self, info: NodeInfo, task: Task) -> str | None:
        state = info.node.status.state
        if state == types_pb2.NODE_READY:
            return None
        if state == types_pb2.NODE_DOWN:
            return "down"
        if state == types_pb2.NODE_DISCONNECTED:
            return "disconnected"
        return "not ready"


class AvailabilityFilter(Filter):
    """PAUSE and DRAIN nodes take no new tasks; UNSPECIFIED counts as ACTIVE."""

    def check(self, info: NodeInfo, task: Task) -> str | None:
        availability = info.node.spec.availability
        if availability == types_pb2.PAUSE:
            return "paused"
        if availability == types_pb2.DRAIN:
            return "draining"
        return None


class _ReservationFilter(Filter):
    """Unreserved capacity on the node covers the task's reservation of one resource
    (``field``: a ResourceSpec field and, with ``free_``, a NodeInfo attribute)."""

    field = ""
    label = ""

    def _fmt(self, value: int) -> str:
        raise NotImplementedError

    def check(self, info: NodeInfo, task: Task) -> str | None:
        need = getattr(task.resources.reservations, self.field)
        return self.label if need > getattr(info, f"free_{self.field}") else None

    def detail(self, task: Task, failed: Sequence[NodeInfo]) -> str:
        need = getattr(task.resources.reservations, self.field)
        most = max(max(getattr(i, f"free_{self.field}") for i in failed), 0)
        return f"need {self._fmt(need)}, max free {self._fmt(most)}"


class CpuFilter(_ReservationFilter):
    """Unreserved CPU on the node covers the task's CPU reservation."""

    field = "nano_cpus"
    label = "insufficient cpu"

    def _fmt(self, value: int) -> str:
        return format_cpus(value)


class MemoryFilter(_ReservationFilter):
    """Unreserved memory on the node covers the task's memory reservation."""

    field = "memory_bytes"
    label = "insufficient memory"

    def _fmt(self, value: int) -> str:
        return format_bytes(value)


class PortFilter(Filter):
    """A node where a task already publishes the same port and protocol cannot take
    another one: two replicas publishing 8080 spread one per node."""

    def check(self, info: NodeInfo, task: Task) -> str | None:
        taken = [p for p in host_ports(task) if p in info.host_ports]
        if not taken:
            return None
        return "with port " + ", ".join(port_label(p) for p in sorted(taken)) + " taken"


class ConstraintFilter(Filter):
    """Every placement constraint of the task holds on the node. Constraints are parsed
    once per distinct list (tasks of one service share theirs)."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, ...], list[Constraint] | str] = {}

    def constraints(self, task: Task) -> list[Constraint] | str:
        """The task's constraints, or the text of an invalid one (a hand-written spec)."""
        texts = tuple(task.placement.constraints)
        if texts not in self._parsed:
            try:
                self._parsed[texts] = parse_constraints(texts)
            except PlacementError as exc:
                self._parsed[texts] = exc.message
        return self._parsed[texts]

    def check(self, info: NodeInfo, task: Task) -> str | None:
        if not task.placement.constraints:
            return None
        constraints = self.constraints(task)
        if isinstance(constraints, str):
            return f"rejecting an invalid constraint ({constraints})"
        unmet = first_unmet(constraints, info.node)
        return None if unmet is None else f"not matching constraint {unmet}"


class MaxReplicasFilter(Filter):
    """The service's max_replicas_per_node: a node already holding that many of its
    non-terminal tasks (stopping ones included) takes no more."""

    def check(self, info: NodeInfo, task: Task) -> str | None:
        limit = task.placement.max_replicas_per_node
        if limit and info.tasks_by_service[task.service_id] >= limit:
            return f"at max_replicas_per_node ({limit})"
        return None


class MaxTasksFilter(Filter):
    """The per-node task limit of the settings, when one is set."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def check(self, info: NodeInfo, task: Task) -> str | None:
        return "full" if self.limit and info.total_tasks >= self.limit else None

    def detail(self, task: Task, failed: Sequence[NodeInfo]) -> str:
        return f"max {self.limit} task{'' if self.limit == 1 else 's'}"


def pipeline(settings: SchedulerSettings) -> list[Filter]:
    """The filters in the order they are asked; a node's failure is the first one's."""
    return [
        ReadyFilter(),
        AvailabilityFilter(),
        ConstraintFilter(),
        MemoryFilter(),
        CpuFilter(),
        PortFilter(),
        MaxReplicasFilter(),
    ] + ([MaxTasksFilter(settings.max_tasks_per_node)] if settings.max_tasks_per_node else [])


# -- the loop's input and output -----------------------------------------------------------


def waiting(tasks: Iterable[Task]) -> list[Task]:
    """The tasks the scheduler places: desired RUNNING, no node, PENDING (the allocator has
    given them their addresses; NEW tasks are not yet allocated), in slot order so that a
    pass places a service's replicas in the same order on every manager."""
    return sorted(
        (
            t
            for t in tasks
            if not t.node_id
            and t.desired_state == types_pb2.RUNNING
            and t.status.state == types_pb2.PENDING
        ),
        key=lambda t: (t.service_id, t.slot, t.id),
    )


def decided(task: Task, decision: Decision, now: datetime) -> Task | None:
    """``task`` as ``decision`` leaves it: on its node and ASSIGNED, or PENDING with the
    reason; None when that is what it already says (so the loop does not feed itself)."""
    stamp = model.timestamp(now)
    out = Task()
    out.CopyFrom(task)
    if decision.node_id:
        out.node_id = decision.node_id
        out.status.CopyFrom(
            objects_pb2.TaskStatus(state=types_pb2.ASSIGNED, timestamp=stamp, message="assigned")
        )
    elif task.status.err != decision.reason or task.status.state != types_pb2.PENDING:
        out.status.state = types_pb2.PENDING
        out.status.err = decision.reason
        out.status.message = "waiting for a node"
        out.status.timestamp.CopyFrom(stamp)
    else:
        return None
    out.meta.updated_at.CopyFrom(stamp)
    return out


# -- placement ---------------------------------------------------------------------------


def schedule(
    tasks: Sequence[Task],
    nodes: Sequence[Node],
    assigned: Iterable[Task],
    settings: SchedulerSettings | None = None,
) -> list[Decision]:
    """One Decision per task in `tasks`, in order. `tasks` are the tasks waiting for a node
    (desired RUNNING, no node_id); others in it are skipped, without a decision. `assigned`
    are tasks that hold a node: the non-terminal ones count as load and reservations."""
    filters = pipeline(settings or SchedulerSettings())
    infos = {node.id: NodeInfo.of(node) for node in sorted(nodes, key=lambda n: n.id)}
    for task in assigned:
        info = infos.get(task.node_id)
        if info is not None and not model.is_terminal(task.status.state):
            info.add(task)
    decisions = []
    for task in tasks:
        if task.node_id or task.desired_state != types_pb2.RUNNING:
            continue
        decision = place(task, list(infos.values()), filters)
        if decision.node_id is not None:
            infos[decision.node_id].add(task)
        decisions.append(decision)
    return decisions


def place(task: Task, infos: Sequence[NodeInfo], filters: Sequence[Filter]) -> Decision:
    """Pick the best node that passes every filter, or explain why none does. A task with
    a target node is asked of that node only."""
    candidates = infos
    if task.target_node:
        candidates = [i for i in infos if i.id == task.target_node]
    fits: list[NodeInfo] = []
    failures: dict[tuple[int, str], list[NodeInfo]] = {}
    for info in candidates:
        for index, flt in enumerate(filters):
            label = flt.check(info, task)
            if label is not None:
                failures.setdefault((index, label), []).append(info)
                break
        else:
            fits.append(info)
    if not fits:
        if task.target_node:
            return Decision(task.id, None, explain_target(task, candidates, failures, filters))
        return Decision(task.id, None, explain(task, len(infos), failures, filters))
    spread = Spread(task, infos)
    best = min(
        fits,
        key=lambda i: (spread.rank(i), i.tasks_by_service[task.service_id], i.total_tasks, i.id),
    )
    same = best.tasks_by_service[task.service_id]
    name = task.service_name or task.service_id
    reason = f"least loaded: {same} of {name} and {best.total_tasks} tasks on {best.id}"
    if task.target_node:
        reason = f"its node: {same} of {name} and {best.total_tasks} tasks on {best.id}"
    return Decision(task.id, best.id, spread.describe(best) + reason)


class Spread:
    """The spread preferences of one task over the nodes as they are now: how many of its
    service's tasks each group of nodes (a label value, then a value of the next label
    within it) holds. A node ranks by those counts, level by level; nodes without the
    label share the value "" and so form one group."""

    def __init__(self, task: Task, infos: Sequence[NodeInfo]) -> None:
        self.attributes: list[Attribute] = spread_attributes(task.placement)
        self.service_id = task.service_id
        self.counts: Counter[tuple[str, ...]] = Counter()
        if not self.attributes:
            return
        for info in infos:
            path = self.path(info)
            held = info.tasks_by_service[task.service_id]
            for depth in range(1, len(path) + 1):
                self.counts[path[:depth]] += held

    def path(self, info: NodeInfo) -> tuple[str, ...]:
        return tuple(a.of(info.node) for a in self.attributes)

    def rank(self, info: NodeInfo) -> tuple[int, ...]:
        path = self.path(info)
        return tuple(self.counts[path[:depth]] for depth in range(1, len(path) + 1))

    def describe(self, info: NodeInfo) -> str:
        """ "spread node.labels.zone=a (1 there); " (the service's tasks in that group
        before this one), or "" without spread preferences."""
        if not self.attributes:
            return ""
        first = self.attributes[0]
        value = first.of(info.node) or "(unset)"
        return f"spread {first}={value} ({self.counts[(first.of(info.node),)]} there); "


def explain(
    task: Task,
    total: int,
    failures: dict[tuple[int, str], list[NodeInfo]],
    filters: Sequence[Filter],
) -> str:
    """'no suitable node (3 nodes): 1 down, 2 insufficient memory (need 512MiB, max free
    256MiB)': failures in pipeline order, each with its filter's detail."""
    head = f"no suitable node ({total} node{'' if total == 1 else 's'})"
    parts = []
    # By pipeline position; labels of one filter in the order their first node came up.
    for (index, label), failed in sorted(failures.items(), key=lambda kv: kv[0][0]):
        detail = filters[index].detail(task, failed)
        parts.append(f"{len(failed)} {label}" + (f" ({detail})" if detail else ""))
    return f"{head}: {', '.join(parts)}" if parts else head


def explain_target(
    task: Task,
    candidates: Sequence[NodeInfo],
    failures: dict[tuple[int, str], list[NodeInfo]],
    filters: Sequence[Filter],
) -> str:
    """Why the node a global task is for cannot take it: "node host3 cannot take it:
    insufficient memory (need 512MiB, max free 256MiB)"."""
    if not candidates:
        return f"its node {task.target_node} is not known"
    node = candidates[0].node
    name = node.description.hostname or node.id
    ((index, label), failed), *_ = failures.items()
    detail = filters[index].detail(task, failed)
    return f"node {name} cannot take it: {label}" + (f" ({detail})" if detail else "")


def format_bytes(n: int) -> str:
    """Binary units, exact where possible: 512MiB, 1.5GiB, 300B."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if n % size == 0 else f"{value:.1f}{unit}"
    return f"{n}B"


def format_cpus(nano: int) -> str:
    """CPUs from nano-CPUs: 0.5 CPUs, 2 CPUs."""
    return f"{nano / 1e9:g} CPU" + ("" if nano == 1_000_000_000 else "s")
