"""An in-memory cluster for the manager's pure cores, like Nomad's scheduler Harness.

It holds services, tasks and nodes as protobuf objects, runs the real `reconcile` and
`schedule` on them, and applies their results with the loops' own pure functions
(`orchestrator.loop.writes`, `ipam.allocated`, `scheduler.core.waiting`/`decided`,
`simulator.reported` for the agents): it glues package code, it holds no rules of its
own. `converge` hands the objects to the simulator (manager/simulator.py: the real loops
over a MemoryStore); `converge_here` reaches the same fixpoint over the dicts, fast enough
for hypothesis (tests/manager/test_harness_agrees.py holds the two to one answer). No
etcd, no clock: tests move time with `advance`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from orch import model
from orch.manager.allocator import ipam
from orch.manager.orchestrator.core import reconcile
from orch.manager.orchestrator.loop import writes
from orch.manager.orchestrator.plan import OrchestratorSettings, Plan
from orch.manager.scheduler.core import Decision, SchedulerSettings, decided, schedule, waiting
from orch.manager.simulator import Simulator, SimulatorSettings, reported
from orch.manager.state.api import Create, Delete, Kind, Op, Update, Versioned
from orch.proto import objects_pb2, specs_pb2, types_pb2
from orch.proto import types_pb2 as T

T0 = datetime(2025, 1, 1, tzinfo=UTC)
GiB = 1 << 30
MiB = 1 << 20

Task = objects_pb2.Task
Service = objects_pb2.Service
Node = objects_pb2.Node
M = TypeVar("M", bound=Message)


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


def restart_policy(
    condition: int = types_pb2.RESTART_CONDITION_UNSPECIFIED,
    *,
    delay: float | None = None,
    max_attempts: int = 0,
    window: float | None = None,
    max_delay: float | None = None,
) -> types_pb2.RestartPolicy:
    policy = types_pb2.RestartPolicy(condition=condition, max_attempts=max_attempts)
    if delay is not None:
        policy.delay.CopyFrom(duration(delay))
    if window is not None:
        policy.window.CopyFrom(duration(window))
    if max_delay is not None:
        policy.max_delay.CopyFrom(duration(max_delay))
    return policy


class Harness:
    """State plus the two cores. Ids of created tasks are "t1", "t2", ... in order."""

    def __init__(
        self,
        *,
        now: datetime = T0,
        settings: OrchestratorSettings | None = None,
        scheduler: SchedulerSettings | None = None,
    ) -> None:
        self.now = now
        self._ids = itertools.count(1)
        self.settings = replace(settings or OrchestratorSettings(), new_id=self._next_id)
        self.scheduler_settings = scheduler or SchedulerSettings()
        self.services: dict[str, Service] = {}
        self.tasks: dict[str, Task] = {}
        self.nodes: dict[str, Node] = {}
        self.plans: list[Plan] = []  # every plan reconcile produced, for assertions

    def _next_id(self) -> str:
        return f"t{next(self._ids)}"

    # -- building state --

    def service(
        self,
        name: str,
        *,
        replicas: int = 1,
        image: str = "busybox:latest",
        policy: types_pb2.RestartPolicy | None = None,
        cpus: float = 0,
        memory: int = 0,
        networks: Iterable[str] = (),
        ports: Iterable[str] = (),
        mode: int = specs_pb2.REPLICATED,
        constraints: Iterable[str] = (),
        spread: Iterable[str] = (),
        max_per_node: int = 0,
    ) -> Service:
        """Add (or replace) a service with id == name, version 1. ``ports`` as
        "8080:80" or "53:53/udp"; ``spread`` lists spread preferences ("node.labels.zone")."""
        spec = specs_pb2.ServiceSpec(name=name, replicas=replicas, mode=mode)
        spec.placement.constraints.extend(constraints)
        for key in spread:
            spec.placement.preferences.add(spread=key)
        spec.placement.max_replicas_per_node = max_per_node
        spec.container.image = image
        spec.container.command.extend(["sleep", "1d"])
        spec.resources.reservations.nano_cpus = int(cpus * 1e9)
        spec.resources.reservations.memory_bytes = memory
        if policy is not None:
            spec.restart_policy.CopyFrom(policy)
        for net in networks:
            spec.networks.add(target=net)
        for port in ports:
            published, _, rest = port.partition(":")
            target, _, protocol = rest.partition("/")
            spec.ports.add(
                published=int(published),
                target=int(target),
                protocol=protocol or "tcp",
                mode="host",
            )
        service = Service(id=name, spec=spec)
        service.meta.version = 1
        service.meta.created_at.FromDatetime(self.now)
        self.services[name] = service
        return service

    def update_service(
        self,
        name: str,
        *,
        replicas: int | None = None,
        image: str | None = None,
        policy: types_pb2.RestartPolicy | None = None,
    ) -> Service:
        """Change a spec the way the Control API does: a new version per write."""
        service = self.services[name]
        if replicas is not None:
            service.spec.replicas = replicas
        if image is not None:
            service.spec.container.image = image
        if policy is not None:
            service.spec.restart_policy.CopyFrom(policy)
        service.meta.version += 1
        return service

    def remove_service(self, name: str) -> None:
        del self.services[name]

    def node(
        self,
        node_id: str,
        *,
        status: int = types_pb2.NODE_READY,
        availability: int = types_pb2.ACTIVE,
        cpus: float = 4,
        memory: int = 8 * GiB,
        labels: dict[str, str] | None = None,
    ) -> Node:
        node = Node(id=node_id)
        node.spec.labels.update(labels or {})
        node.description.hostname = node_id
        node.description.resources.nano_cpus = int(cpus * 1e9)
        node.description.resources.memory_bytes = memory
        node.spec.availability = availability
        node.status.state = status
        self.nodes[node_id] = node
        return node

    def set_node(
        self, node_id: str, *, status: int | None = None, availability: int | None = None
    ) -> None:
        node = self.nodes[node_id]
        if status is not None:
            node.status.state = status
        if availability is not None:
            node.spec.availability = availability

    def add_task(
        self,
        service: str,
        slot: int,
        *,
        state: int = types_pb2.RUNNING,
        desired: int = types_pb2.RUNNING,
        node: str = "",
        exit_code: int = 0,
        created: datetime | None = None,
        started: datetime | None = None,
        finished: datetime | None = None,
        restart_count: int = 0,
        version: int | None = None,
        task_id: str | None = None,
    ) -> Task:
        """A task as if made earlier; its spec is the service's current one."""
        svc = self.services.get(service)
        task = Task(
            id=task_id or self._next_id(),
            service_id=service,
            service_name=service,
            slot=slot,
            desired_state=desired,
            node_id=node,
            restart_count=restart_count,
        )
        if svc is not None:
            task.service_version = svc.meta.version if version is None else version
            task.container.CopyFrom(svc.spec.container)
            task.resources.CopyFrom(svc.spec.resources)
            task.ports.extend(svc.spec.ports)
            task.placement.CopyFrom(svc.spec.placement)
        task.meta.created_at.FromDatetime(created or self.now)
        task.status.state = state
        task.status.exit_code = exit_code
        task.status.timestamp.FromDatetime(finished or started or created or self.now)
        if started is not None:
            task.status.started_at.FromDatetime(started)
        if finished is not None:
            task.status.finished_at.FromDatetime(finished)
        self.tasks[task.id] = task
        return task

    # -- time --

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    # -- the cores --

    def reconcile(self) -> Plan:
        plan = reconcile(
            self.services, list(self.tasks.values()), self.nodes, self.now, self.settings
        )
        self.plans.append(plan)
        return plan

    def apply(self, plan: Plan) -> None:
        """Apply a plan as the orchestrator loop does: its ops, made by the loop's own
        `writes`."""
        self.commit(writes(plan, self.get))

    def step(self) -> Plan:
        """Reconcile and apply."""
        plan = self.reconcile()
        self.apply(plan)
        return plan

    def allocate(self) -> None:
        """One allocator pass: NEW tasks become PENDING (the harness has no overlay
        networks, so no addresses), with the allocator's own choice and task updates."""
        decided = ipam.plan(self.tasks.values(), {}, [])
        self.commit(
            Update(Kind.TASK, ipam.allocated(self.tasks[a.task_id], a, self.now), 0)
            for a in decided.allocated
        )
        for w in decided.waiting:
            task = ipam.unallocated(self.tasks[w.task_id], w, self.now)
            if task is not None:
                self.commit([Update(Kind.TASK, task, 0)])

    def waiting(self) -> list[Task]:
        """Tasks the scheduler loop hands to `schedule`."""
        return waiting(self.tasks.values())

    def schedule(self) -> list[Decision]:
        """An allocator pass (the leader runs it before the scheduler's), then the
        scheduler's decisions, not yet applied."""
        self.allocate()
        assigned = [t for t in self.tasks.values() if t.node_id]
        return schedule(
            self.waiting(),
            sorted(self.nodes.values(), key=lambda n: n.id),
            assigned,
            self.scheduler_settings,
        )

    def apply_decisions(self, decisions: Iterable[Decision]) -> None:
        """As the scheduler loop does, with its own `decided`."""
        for d in decisions:
            task = decided(self.tasks[d.task_id], d, self.now)
            if task is not None:
                self.commit([Update(Kind.TASK, task, 0)])

    def place(self) -> list[Decision]:
        """An allocator pass, then a scheduler pass."""
        decisions = self.schedule()
        self.apply_decisions(decisions)
        return decisions

    # -- the store: the loops' ops applied to the dicts (no revisions: one writer) --

    def get(self, kind: Kind, name: str) -> Versioned | None:
        objects: dict = {Kind.SERVICE: self.services, Kind.TASK: self.tasks}[kind]
        obj = objects.get(name)
        return None if obj is None else Versioned(kind, kind.key(name), obj, 1)

    def commit(self, ops: Iterable[Op]) -> None:
        for op in ops:
            if isinstance(op, Create):
                assert op.obj.id not in self.tasks, f"create of existing task {op.obj.id}"
                self.tasks[op.obj.id] = _copy(op.obj)
            elif isinstance(op, Update) and op.kind is Kind.SERVICE:
                self.services[op.obj.id] = _copy(op.obj)
            elif isinstance(op, Update):
                assert op.obj.id in self.tasks, f"update of missing task {op.obj.id}"
                self.tasks[op.obj.id] = _copy(op.obj)
            else:
                assert isinstance(op, Delete), op
                task_id = op.key.removeprefix(Kind.TASK.key(""))
                assert task_id in self.tasks, f"delete of missing task {task_id}"
                del self.tasks[task_id]

    # -- the agent --

    def report(self, task_id: str, state: int, *, exit_code: int = 0) -> Task:
        """The agent reports `state` for a task at the current time."""
        status = self.tasks[task_id].status
        status.state = state
        status.timestamp.FromDatetime(self.now)
        if state == types_pb2.RUNNING:
            status.started_at.FromDatetime(self.now)
        if model.is_terminal(state):
            status.exit_code = exit_code
            status.finished_at.FromDatetime(self.now)
        return self.tasks[task_id]

    def run(self, task_id: str) -> Task:
        return self.report(task_id, types_pb2.RUNNING)

    def fail(self, task_id: str, exit_code: int = 1) -> Task:
        return self.report(task_id, types_pb2.FAILED, exit_code=exit_code)

    def complete(self, task_id: str, exit_code: int = 0) -> Task:
        return self.report(task_id, types_pb2.COMPLETE, exit_code=exit_code)

    def agent_tick(self) -> int:
        """Every READY node's agent catches up, as the simulator's agents do (its own
        `reported`). Returns how many tasks changed."""
        ready = {n.id for n in self.nodes.values() if n.status.state == types_pb2.NODE_READY}
        reports = [
            Update(Kind.TASK, task, 0)
            for t in list(self.tasks.values())
            if t.node_id in ready and (task := reported(t, self.now)) is not None
        ]
        self.commit(reports)
        return len(reports)

    def converge(self) -> None:
        """Let the leader's loops and the agents run until nothing changes, at ``now``: the
        simulator (the real loops over a MemoryStore) over a copy of the objects here,
        whose services and tasks then replace these."""
        asyncio.run(self._simulate())

    async def _simulate(self) -> None:
        settings = SimulatorSettings(
            orchestrator=self.settings,
            scheduler=self.scheduler_settings,
            horizon=timedelta(0),  # no time passes: tests move it with `advance`
        )
        async with Simulator(self.now, settings) as sim:
            await sim.write(
                [Create(Kind.NODE, n) for n in self.nodes.values()]
                + [Create(Kind.SERVICE, s) for s in self.services.values()]
                + [Create(Kind.TASK, t) for t in self.tasks.values()]
            )
            assert await sim.settle(), f"no fixpoint after {settings.max_rounds} rounds"
            self.services = {s.id: s for s in sim.view.objects(Kind.SERVICE)}
            self.tasks = {t.id: t for t in sim.tasks()}

    def converge_here(self, rounds: int = 20) -> None:
        """As `converge`, by the same pure functions the loops call, over the dicts here
        (the allocator without networks): fast enough for hypothesis."""
        for _ in range(rounds):
            plan = self.step()
            placed = [d for d in self.place() if d.node_id]
            if plan.empty and not placed and not self.agent_tick():
                return
        raise AssertionError(f"no fixpoint after {rounds} rounds")

    # -- queries --

    def __repr__(self) -> str:
        """The whole state, one line per object, so a hypothesis failure reads as a story."""
        lines = [f"Harness(now={self.now.isoformat()}, {self.settings.task_history_limit=})"]
        for s in self.services.values():
            p = s.spec.restart_policy
            lines.append(
                f"  service {s.id} v{s.meta.version} replicas={s.spec.replicas}"
                f" policy=({T.RestartCondition.Name(p.condition)}"
                f" delay={p.delay.ToTimedelta() if p.HasField('delay') else None}"
                f" max_attempts={p.max_attempts} window={p.window.ToTimedelta()})"
            )
        for n in self.nodes.values():
            lines.append(
                f"  node {n.id} {T.NodeStatus.Name(n.status.state)}"
                f" {T.NodeAvailability.Name(n.spec.availability)}"
            )
        for t in sorted(self.tasks.values(), key=lambda t: (t.service_id, t.slot, t.id)):
            c = (t.meta.created_at.ToDatetime(tzinfo=UTC) - self.now).total_seconds()
            f = t.status.finished_at
            ended = (f.ToDatetime(tzinfo=UTC) - self.now).total_seconds() if f.seconds else None
            lines.append(
                f"  task {t.id} {t.service_id}.{t.slot} desired={T.TaskState.Name(t.desired_state)}"
                f" state={T.TaskState.Name(t.status.state)} exit={t.status.exit_code}"
                f" node={t.node_id or '-'} rc={t.restart_count} created={c:+.0f}s"
                f" finished={ended}"
            )
        return "\n".join(lines)

    def slot_tasks(self, service: str, slot: int) -> list[Task]:
        """The slot's tasks, oldest first."""
        return sorted(
            (t for t in self.tasks.values() if t.service_id == service and t.slot == slot),
            key=lambda t: (t.meta.created_at.ToNanoseconds(), t.restart_count, t.id),
        )

    def is_live(self, task: Task) -> bool:
        """Desired running, not ended, on no node or a node that is up and not drained."""
        if not task.node_id:
            return model.is_live(task)
        node = self.nodes.get(task.node_id)
        return (
            model.is_live(task)
            and node is not None
            and node.status.state != types_pb2.NODE_DOWN
            and node.spec.availability != types_pb2.DRAIN
        )

    def is_draining(self, task: Task) -> bool:
        """Still runs on a node that is up and drained: a move keeps it until its
        replacement runs."""
        node = self.nodes.get(task.node_id) if task.node_id else None
        return (
            model.is_live(task)
            and node is not None
            and node.status.state != types_pb2.NODE_DOWN
            and node.spec.availability == types_pb2.DRAIN
        )

    def live(self, service: str) -> list[Task]:
        return sorted(
            (t for t in self.tasks.values() if t.service_id == service and self.is_live(t)),
            key=lambda t: t.slot,
        )

    def running_on(self, node_id: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.node_id == node_id and self.is_live(t)]


def _copy(obj: M) -> M:
    out = type(obj)()
    out.CopyFrom(obj)
    return out
