"""A cluster simulator: the real leader loops over an in-memory store, on fake time.

It copies a view's objects (services, tasks, nodes, networks, leases, claims) into a
MemoryStore with its own ClusterView, then runs the real OrchestratorLoop, AllocatorLoop and SchedulerLoop, one
pass at a time (``ControlLoop.one_pass``: the same plan and commit as on the leader),
and plays the agents: a task assigned to a ready node runs (healthy where it has a
check), a task desired to stop stops. When nothing changes any more, time jumps to the
earliest moment a loop asked to be woken (restart delays, rolling-update delays and
monitor windows), until nothing is due within ``horizon``. No etcd, no real clock, no
sleeps: a simulation of a few services takes milliseconds.

``orch apply --dry-run`` runs an Apply's decision through it and reports, with
:func:`task_plan`, which tasks would start and stop, on which nodes, and which would stay
pending and why. Tests drive it directly.

What it does not model: agents that fail (images, health), node liveness, and the
dispatcher's status batching; every simulated agent succeeds at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orch import model
from orch.manager.allocator.loop import AllocatorLoop
from orch.manager.controlapi.decision import Decision, View
from orch.manager.loop import ControlLoop
from orch.manager.orchestrator.loop import OrchestratorLoop
from orch.manager.orchestrator.plan import OrchestratorSettings
from orch.manager.scheduler.core import SchedulerSettings
from orch.manager.scheduler.loop import SchedulerLoop
from orch.manager.state.api import Create, Kind, Op, Update
from orch.manager.state.memstore import MemoryStore
from orch.manager.state.view import ClusterView
from orch.proto import control_pb2, objects_pb2, specs_pb2, types_pb2

# What a simulation copies: the desired and observed state the loops read. Liveness and
# manager presence are leased records of the real cluster, not the loops' inputs.
COPIED = (Kind.SERVICE, Kind.TASK, Kind.NODE, Kind.NETWORK, Kind.LEASE, Kind.CLAIM)

# The agent's way from ASSIGNED to RUNNING, which the simulated agent takes at once.
_STARTING = (types_pb2.ASSIGNED, types_pb2.ACCEPTED, types_pb2.PREPARING, types_pb2.STARTING)


@dataclass(frozen=True)
class SimulatorSettings:
    orchestrator: OrchestratorSettings = dataclasses.field(default_factory=OrchestratorSettings)
    """As the leader's (restart delays, task history)."""
    scheduler: SchedulerSettings = dataclasses.field(default_factory=SchedulerSettings)
    horizon: timedelta = timedelta(hours=1)
    """Fake time a simulation may run: a wake-up later than this is not waited for."""
    max_rounds: int = 500
    """Rounds (every loop once, then the agents) at most; a bound, not an expectation."""
    max_tasks: int = 2000
    """Tasks a dry run simulates at most: each costs a few milliseconds (every write is
    encoded as etcd's would be), and the answer must come within the CLI's deadline. A
    larger dry run reports its changes without the task plan, and says so."""


@dataclass
class DryRun:
    """The tasks a dry run plans, and why the plan is missing or partial ("": it is
    complete)."""

    tasks: list[control_pb2.PlannedTask]
    note: str = ""


class Simulator:
    """A MemoryStore, a ClusterView of it, the leader's loops and the agents, on fake
    time. An async context manager: the view's feed runs while it is open."""

    def __init__(self, now: datetime, settings: SimulatorSettings | None = None) -> None:
        self.settings = settings or SimulatorSettings()
        self.now = now
        self._start = now
        self.store = MemoryStore(clock=self._seconds)  # leases expire on the fake time
        self.view = ClusterView(self.store)
        shell: dict[str, Any] = {
            "store": self.store,
            "view": self.view,
            "fence": lambda: None,  # one writer: nobody to fence off
            "clock": lambda: self.now,
        }
        self.loops: list[ControlLoop] = [
            OrchestratorLoop(settings_core=self.settings.orchestrator, **shell),
            AllocatorLoop(**shell),
            SchedulerLoop(settings_core=self.settings.scheduler, **shell),
        ]
        self._wake: dict[str, datetime | None] = {}
        self._feed: asyncio.Task | None = None

    def _seconds(self) -> float:
        return (self.now - self._start).total_seconds()

    async def __aenter__(self) -> Simulator:
        self._feed = asyncio.create_task(self.view.run())
        await self.view.ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._feed is not None:
            self._feed.cancel()
            await asyncio.gather(self._feed, return_exceptions=True)
        await self.store.close()

    async def copy(self, view: View) -> None:
        """Take in what ``view`` holds now (the kinds of COPIED)."""
        await self.write([Create(kind, v.obj) for kind in COPIED for v in view.items(kind)])

    async def write(self, ops: Sequence[Op]) -> None:
        """Commit ``ops`` (in chunks, as the loops do); returns once the view has them."""
        await self.store.commit_chunked(ops)
        await self._caught_up()

    async def _caught_up(self) -> None:
        await self.view.wait_for(await self.store.revision())

    async def settle(self) -> bool:
        """Run the loops and the agents until nothing changes and nothing is due within
        the horizon; False when ``max_rounds`` ran out first."""
        end = self.now + self.settings.horizon
        for _ in range(self.settings.max_rounds):
            if await self.round():
                continue
            due = [at for at in self._wake.values() if at is not None and at > self.now]
            if not due or min(due) > end:
                return True
            self.now = min(due)
        return False

    async def round(self) -> bool:
        """Every loop once, then the agents; True when anything was written."""
        before = self.view.revision
        for loop in self.loops:
            self._wake[loop.name] = await loop.one_pass()
            await self._caught_up()
        await self.write(agents(self.view, self.now))
        return self.view.revision != before

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def tasks(self) -> list[objects_pb2.Task]:
        return list(self.view.objects(Kind.TASK))


async def dry_run(
    view: View,
    decide: Callable[[View], Decision],
    now: datetime,
    settings: SimulatorSettings | None = None,
) -> DryRun:
    """What would become of the tasks of the services ``decide`` (a Control API
    decision, made again over the copy: revisions differ there) changes."""
    settings = settings or SimulatorSettings()
    size = expected_tasks(view, decide(view))
    if size > settings.max_tasks:
        return DryRun(
            [],
            f"tasks not simulated: the cluster would hold about {size} tasks, a dry run "
            f"simulates at most {settings.max_tasks}",
        )
    async with Simulator(now, settings) as sim:
        await sim.copy(view)
        before = sim.tasks()
        decision = decide(sim.view)
        await sim.write(decision.ops)
        settled = await sim.settle()
        names = {c.name for c in decision.changes if c.kind == "service"}
        planned = task_plan(before, sim.tasks(), sim.view.objects(Kind.NODE), names)
    note = (
        ""
        if settled
        else f"partial plan: the simulation stopped after {settings.max_rounds} rounds"
    )
    return DryRun(planned, note)


def expected_tasks(view: View, decision: Decision) -> int:
    """About how many tasks a simulation of ``decision`` holds: the tasks there are, and
    one per replica (or per node, for a global service) of each service it writes."""
    nodes = sum(1 for _ in view.objects(Kind.NODE))
    size = sum(1 for _ in view.objects(Kind.TASK))
    for op in decision.ops:
        if isinstance(op, Create | Update) and op.kind is Kind.SERVICE:
            spec = op.obj.spec
            size += nodes if spec.mode == specs_pb2.GLOBAL else spec.replicas
    return size


def agents(view: View, now: datetime) -> list[Op]:
    """What every agent reports at once (see :func:`reported`). Only agents of ready
    nodes act."""
    ready = {n.id for n in view.objects(Kind.NODE) if n.status.state == types_pb2.NODE_READY}
    ops: list[Op] = []
    for current in view.items(Kind.TASK):
        task = reported(current.obj, now) if current.obj.node_id in ready else None
        if task is not None:
            ops.append(Update(Kind.TASK, task, current.mod_revision))
    return ops


def reported(task: objects_pb2.Task, now: datetime) -> objects_pb2.Task | None:
    """What a simulated agent of a ready node reports for ``task`` at once: an assigned
    task runs (healthy where checked), a task desired to stop stops (143: it took the stop
    signal); None when there is nothing to do (it runs, or has ended)."""
    if model.is_terminal(task.status.state):
        return None
    if task.desired_state == types_pb2.RUNNING and task.status.state in _STARTING:
        return _reported(task, types_pb2.RUNNING, now)
    if task.desired_state > types_pb2.RUNNING:
        return _reported(task, types_pb2.SHUTDOWN, now)
    return None


def _reported(task: objects_pb2.Task, state: int, now: datetime) -> objects_pb2.Task:
    out = objects_pb2.Task()
    out.CopyFrom(task)
    stamp = model.timestamp(now)
    out.status.state = state
    out.status.timestamp.CopyFrom(stamp)
    out.status.message = model.state_name(state)
    if state == types_pb2.RUNNING:
        out.status.started_at.CopyFrom(stamp)
        if task.container.HasField("healthcheck"):
            out.status.health = types_pb2.HEALTH_HEALTHY
    else:
        out.status.exit_code = 143
        out.status.finished_at.CopyFrom(stamp)
    return out


def task_plan(
    before: Iterable[objects_pb2.Task],
    after: Iterable[objects_pb2.Task],
    nodes: Iterable[objects_pb2.Node],
    services: set[str],
) -> list[control_pb2.PlannedTask]:
    """What became of the tasks of ``services`` (names): the live ones that keep
    running, stop, start (a new task placed on a node, or a waiting one placed), and the
    ones left waiting for a node, with the reason."""
    hostnames = {n.id: n.description.hostname or n.id for n in nodes}
    was = {t.id: t for t in before if t.service_name in services and model.is_live(t)}
    now = {t.id: t for t in after if t.service_name in services}
    planned = []
    for task in now.values():
        if not model.is_live(task):
            continue
        old = was.get(task.id)
        if not task.node_id:
            action, reason = "pending", task.status.err or task.status.message
        elif old is None or not old.node_id:
            action, reason = "start", ""
        else:
            action, reason = "keep", ""
        planned.append(_planned(task, action, hostnames, reason))
    for task_id, task in was.items():
        if task_id not in now or not model.is_live(now[task_id]):
            planned.append(_planned(task, "stop", hostnames, ""))
    return sorted(planned, key=lambda p: (p.service, p.slot, p.node, _ORDER[p.action]))


_ORDER = {"stop": 0, "keep": 1, "start": 2, "pending": 3}


def _planned(
    task: objects_pb2.Task, action: str, hostnames: dict[str, str], reason: str
) -> control_pb2.PlannedTask:
    return control_pb2.PlannedTask(
        service=task.service_name,
        slot=task.slot,
        node=hostnames.get(task.node_id, task.node_id),
        action=action,
        reason=reason,
        task_id=task.id,
    )
