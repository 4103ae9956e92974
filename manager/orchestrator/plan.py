"""What one reconcile decides (Plan), the knobs it decides with (OrchestratorSettings), and
the PlanBuilder every kind of service adds to.

Why one builder: replicated and global services, removed services and rolling updates all
end in one Plan that the leader's loop applies in guarded txns, and they must agree on
what a task's node means (lost, drained, gone) and on how a task is created or shut down.
The builder holds those inputs and facts and the plan so far; the slot rule (slots.py)
and the service modes (replicated.py, global_mode.py) decide what to add.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from orch import model
from orch.manager.orchestrator import updater
from orch.proto import objects_pb2, types_pb2

Task = objects_pb2.Task
Service = objects_pb2.Service
Node = objects_pb2.Node


@dataclass(frozen=True)
class OrchestratorSettings:
    """Tunables of the orchestrator. Tests shrink the delays."""

    task_history_limit: int = 5
    """Ended tasks kept per slot besides its current task, so `orch ps` can show why a slot
    restarted. Older terminal ones are deleted. 0 keeps none."""

    restart_delay: timedelta = timedelta(seconds=5)
    """Delay before the first restart of a slot when the restart policy sets none (Swarm's
    default). It doubles per consecutive restart, up to the max delay."""

    restart_max_delay: timedelta = timedelta(minutes=1)
    """Cap of the doubled restart delay when the restart policy sets no max_delay."""

    backoff_reset_after: timedelta = timedelta(seconds=10)
    """A task that ran at least this long ends a run of consecutive restarts: the next
    restart waits the base delay again (Docker's rule)."""

    new_id: Callable[[], str] = model.new_id
    """Factory of ids for created tasks; tests pass a counter to be deterministic."""


@dataclass
class Plan:
    """What one reconcile decided. The shell applies it in one guarded txn."""

    create: list[Task] = field(default_factory=list)
    """New tasks, complete: id, service, slot, spec copy, desired RUNNING, status NEW."""

    update: list[Task] = field(default_factory=list)
    """Copies of existing tasks whose desired_state changed; nothing else differs."""

    delete: list[str] = field(default_factory=list)
    """Ids of tasks to delete from the store."""

    wake_at: datetime | None = None
    """Earliest future time at which reconcile must run again (a restart delay ends, or a
    restart drops out of the max_attempts window). None: only on the next change."""

    services: list[Service] = field(default_factory=list)
    """Services whose update status changed (the rolling-update planner, updater.py); for
    an automatic rollback also their spec. Written guarded by the revision read."""

    @property
    def empty(self) -> bool:
        """True when the plan changes nothing (wake_at does not count)."""
        return not (self.create or self.update or self.delete or self.services)

    def summary(self) -> str:
        """One line for logs and dry runs: 'create 2, update 1, delete 0'."""
        return f"create {len(self.create)}, update {len(self.update)}, delete {len(self.delete)}"


@dataclass(frozen=True)
class Slot:
    """Where a task belongs: a replicated service's slot 1..N, or for a global service
    slot 0 on the node its tasks are tied to (``target_node``)."""

    number: int
    node_id: str = ""


def wants_run(task: Task) -> bool:
    """Desired RUNNING (anything at or below RUNNING, as swarmkit reads it)."""
    return task.desired_state <= types_pb2.RUNNING


class PlanBuilder:
    """The state of one reconcile call: inputs that do not change, and the plan so far."""

    def __init__(
        self, nodes: Mapping[str, Node], now: datetime, settings: OrchestratorSettings | None
    ) -> None:
        self.nodes = nodes
        self.now = now
        self.settings = settings or OrchestratorSettings()
        self.creates: list[Task] = []
        self.shutdowns: dict[str, Task] = {}  # id -> task whose desired state becomes SHUTDOWN
        self.deletes: dict[str, None] = {}  # ordered set
        self.wake_at: datetime | None = None
        self.services: list[Service] = []  # update status (and rollback) writes
        self.facts = updater.Facts(is_live=self.is_live, node_lost=self.node_lost)

    def plan(self) -> Plan:
        updates = []
        for task_id, task in self.shutdowns.items():
            if task_id in self.deletes:
                continue
            copy = Task()
            copy.CopyFrom(task)
            copy.desired_state = types_pb2.SHUTDOWN
            updates.append(copy)
        return Plan(self.creates, updates, list(self.deletes), self.wake_at, self.services)

    # -- node facts --

    def node_lost(self, task: Task) -> bool:
        """The task's node is DOWN or gone: it is not running anything we can count on."""
        if not task.node_id:
            return False
        node = self.nodes.get(task.node_id)
        return node is None or node.status.state == types_pb2.NODE_DOWN

    def holds_nothing(self, task: Task) -> bool:
        """Never got a node (NEW/PENDING), or its node is gone: no agent will report on it,
        so it can be deleted without waiting for a stop."""
        return not task.node_id or task.node_id not in self.nodes

    def draining(self, task: Task) -> bool:
        """The task still runs, on a node the user drains: it is to move elsewhere."""
        node = self.nodes.get(task.node_id) if task.node_id else None
        return (
            node is not None
            and node.spec.availability == types_pb2.DRAIN
            and not self.node_lost(task)
            and not model.is_terminal(task.status.state)
        )

    def is_live(self, task: Task) -> bool:
        return (
            wants_run(task)
            and not model.is_terminal(task.status.state)
            and not self.node_lost(task)
            and not self.draining(task)
        )

    def deletable(self, task: Task) -> bool:
        return model.is_terminal(task.status.state) or self.holds_nothing(task)

    # -- plan building --

    def wake(self, at: datetime) -> None:
        if at > self.now and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at

    def shut_down(self, task: Task) -> None:
        """Move a task to history: SHUTDOWN, or straight deletion when it never got a node."""
        if self.holds_nothing(task):
            self.deletes[task.id] = None
        elif wants_run(task):
            self.shutdowns[task.id] = task

    def clear(self, tasks: Iterable[Task]) -> None:
        """Tasks that keep no history (removed service, slot above replicas, a global
        service's node that no longer takes it): stop the live ones, delete what has ended.
        Stopping tasks stay until their agent reports."""
        for task in sorted(tasks, key=lambda t: t.id):
            if self.deletable(task):
                self.deletes[task.id] = None
            elif wants_run(task):
                self.shutdowns[task.id] = task

    def create(
        self, service: Service, slot: Slot, restart_count: int, replaces: Task | None
    ) -> Task:
        """A new task for ``slot`` from the service's current spec, added to the plan."""
        spec = service.spec
        task = Task(
            id=self.settings.new_id(),
            service_id=service.id,
            service_name=spec.name,
            slot=slot.number,
            target_node=slot.node_id,
            service_version=service.meta.version,
            desired_state=types_pb2.RUNNING,
            restart_count=restart_count,
        )
        task.meta.created_at.FromDatetime(self.now)
        task.meta.updated_at.FromDatetime(self.now)
        task.container.CopyFrom(spec.container)
        task.resources.CopyFrom(spec.resources)
        task.restart_policy.CopyFrom(spec.restart_policy)
        task.networks.extend(spec.networks)
        task.ports.extend(spec.ports)
        task.placement.CopyFrom(spec.placement)
        task.status.state = types_pb2.NEW
        task.status.timestamp.FromDatetime(self.now)
        task.status.message = "created" if replaces is None else f"replaces {replaces.id}"
        self.creates.append(task)
        return task
