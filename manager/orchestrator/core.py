"""The replicated-service orchestrator's decision logic: a pure function from a snapshot
of services, tasks and nodes (plus the time) to a Plan of task creations, desired-state
changes and deletions.

Why pure: the leader's loop (the IO shell) watches etcd, calls `reconcile` on a consistent
snapshot and applies the Plan in one revision-guarded txn; on a conflict it just reconciles
again. Everything here can therefore be tested without etcd and without a clock, and the
same function serves a dry run. The shape follows Nomad's reconciler (state in, plan out)
and swarmkit's replicated orchestrator and restart supervisor (slots, restart policy, task
history).

The model, per service with `replicas` = N:

* Slots 1..N each want exactly one *live* task: desired RUNNING, observed state not
  terminal, and not on a node that is DOWN, no longer known, or drained.
* A slot's tasks other than its *current* one (the best live task, else its newest task
  desired RUNNING) are *history*: the orchestrator sets their desired state to SHUTDOWN
  (only ever raising it) and deletes the oldest terminal ones beyond `task_history_limit`.
  The agent writes observed status; we never do, except the NEW status of a task we create.
* A slot whose current task ended while still desired RUNNING is restarted per the
  service's *current* restart policy (the user's latest intent: switching to NONE stops a
  crash loop). A slot that is not restarted (condition NONE, attempts used up, delay not
  over) keeps the ended task desired RUNNING: that marks the slot as done or waiting, not
  empty. A lost node's tasks are replaced at once (unless NONE); a drained node's tasks are
  moved at once whatever the policy, start-first (the old task is shut down once its
  replacement is ready: running, and healthy where checked, as in a start-first rolling
  update), and a move is no restart.
* Slots above N and services that no longer exist keep no history: their tasks are shut
  down and deleted once terminal.
* A task whose spec differs from the service's (replicas aside) is outdated. It keeps
  running until the rolling-update planner (updater.py) picks its slot for a batch: then
  start-first creates the replacement at once and keeps the old task until the new one is
  ready; stop-first shuts the old task down and creates the replacement once it stopped.
  The planner's update status (and an automatic rollback's spec) is written with the plan.

`restart_count` on tasks counts the slot's restarts: a replacement gets the slot's highest
count + 1, a move keeps its count, a task made for an empty slot starts at 0. Restarts
"forever" (window 0) are read from it; restarts within a window and the backoff's run of
consecutive crashes are read from the retained history, so retention keeps at least
`max_attempts` ended tasks when a window is set, and a history limit of 0 disables the
doubling of the delay.

Idempotency: applying a Plan and reconciling again at the same `now` yields an empty Plan
(only `wake_at` may be set). So retention is computed on the post-plan state, and restart
decisions read only the history that this plan keeps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from orch import model
from orch.manager.orchestrator import global_mode as globalorch
from orch.manager.orchestrator import updater
from orch.proto import objects_pb2, specs_pb2, types_pb2

Task = objects_pb2.Task
Service = objects_pb2.Service
Node = objects_pb2.Node

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_BACKOFF_EXPONENT = 30  # 5s * 2**30 is decades; keeps the arithmetic small


@dataclass(frozen=True)
class OrchestratorSettings:
    """Tunables of the replicated orchestrator. Tests shrink the delays."""

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


# -- task predicates --------------------------------------------------------------------


is_terminal = model.is_terminal  # COMPLETE, SHUTDOWN, FAILED, REJECTED, ORPHANED


def wants_run(task: Task) -> bool:
    """Desired RUNNING (anything at or below RUNNING, as swarmkit reads it)."""
    return task.desired_state <= types_pb2.RUNNING


def _ts(msg: Message, name: str) -> datetime | None:
    """A Timestamp field as an aware datetime, or None when unset."""
    if not msg.HasField(name):
        return None
    return getattr(msg, name).ToDatetime(tzinfo=UTC)


def _dur(policy: types_pb2.RestartPolicy, name: str) -> timedelta | None:
    if not policy.HasField(name):
        return None
    return getattr(policy, name).ToTimedelta()


def created_at(task: Task) -> datetime:
    return _ts(task.meta, "created_at") or _EPOCH


def ended_at(task: Task) -> datetime:
    """When the task ended: finished_at, else the time of its last status, else creation."""
    return _ts(task.status, "finished_at") or _ts(task.status, "timestamp") or created_at(task)


def age_key(task: Task) -> tuple[int, int, int, str]:
    """Sort key, oldest first: creation time, then the slot's restart counter, then id."""
    c = task.meta.created_at
    return (c.seconds, c.nanos, task.restart_count, task.id)


def _live_rank(task: Task) -> tuple[int, tuple[int, int, int, str]]:
    # Observed states are ordered: RUNNING > STARTING > ... > NEW; then the newest wins.
    return (task.status.state, age_key(task))


def should_restart(condition: int, task: Task, node_lost: bool) -> bool:
    """The restart condition applied to an ended task. ON_FAILURE restarts everything but a
    clean COMPLETE with exit code 0 (a lost node is a failure)."""
    if condition == types_pb2.RESTART_NONE:
        return False
    if condition == types_pb2.RESTART_ON_FAILURE:
        clean = task.status.state == types_pb2.COMPLETE and task.status.exit_code == 0
        return node_lost or not clean
    return True  # ANY, and UNSPECIFIED which means ANY


# -- the reconciler ----------------------------------------------------------------------


def reconcile(
    services: Mapping[str, Service],
    tasks: Iterable[Task],
    nodes: Mapping[str, Node],
    now: datetime,
    settings: OrchestratorSettings | None = None,
) -> Plan:
    """Decide what to create, shut down and delete so every service has one live task per
    slot. `services` and `nodes` are keyed by id; `now` is naive-UTC or aware."""
    run = _Run(nodes, now if now.tzinfo else now.replace(tzinfo=UTC), settings)
    by_service: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        by_service[task.service_id].append(task)
    for service_id in sorted(set(services) | set(by_service)):
        service = services.get(service_id)
        if service is None:
            run.clear(by_service[service_id])
        elif service.spec.mode == specs_pb2.GLOBAL:  # one task per node: globalorch.py
            globalorch.reconcile_global(run, service, by_service.get(service_id, []))
        else:
            run.service(service, by_service.get(service_id, []))
    return run.plan()


class _Run:
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
            and not is_terminal(task.status.state)
        )

    def is_live(self, task: Task) -> bool:
        return (
            wants_run(task)
            and not is_terminal(task.status.state)
            and not self.node_lost(task)
            and not self.draining(task)
        )

    def deletable(self, task: Task) -> bool:
        return is_terminal(task.status.state) or self.holds_nothing(task)

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
        """Tasks that keep no history (removed service, slot above replicas): stop the live
        ones, delete what has ended. Stopping tasks stay until their agent reports."""
        for task in sorted(tasks, key=lambda t: t.id):
            if self.deletable(task):
                self.deletes[task.id] = None
            elif wants_run(task):
                self.shutdowns[task.id] = task

    def service(self, service: Service, tasks: list[Task]) -> None:
        replicas = service.spec.replicas
        by_slot: dict[int, list[Task]] = defaultdict(list)
        for task in tasks:
            by_slot[task.slot].append(task)
        step = self.update_step(service, by_slot)
        if step is None:
            return  # rolled back: the restored spec is planned on the next pass
        out_of_range = sorted(s for s in by_slot if not 1 <= s <= replicas)
        # Highest slots first: a plan applied in several txns scales down from the top.
        for slot in reversed(out_of_range):
            self.clear(by_slot[slot])
        for slot in range(1, replicas + 1):
            self.slot(service, slot, by_slot.get(slot, []), step.replace.get(slot))

    def update_step(
        self, service: Service, by_slot: Mapping[int, list[Task]]
    ) -> updater.Step | None:
        """The rolling-update planner's step for the service (which outdated slots to
        replace now), with its status write planned; None when it rolls back: then only the
        service is written in this pass."""
        slots = {s: by_slot.get(s, []) for s in range(1, service.spec.replicas + 1)}
        step = updater.plan(service, slots, self.now, self.facts)
        if step.wake_at is not None:
            self.wake(step.wake_at)
        if step.rollback:
            reason = step.status.message if step.status else "update failed"
            self.services.append(updater.rolled_back(service, self.now, reason))
            return None
        if step.status is not None:
            written = Service()
            written.CopyFrom(service)
            written.update_status.CopyFrom(step.status)
            self.services.append(written)
        return step

    def slot(
        self, service: Service, slot: int, tasks: list[Task], replace: int | None = None
    ) -> None:
        # `replace`: the update planner replaces this slot's outdated task now, in this
        # order (updater.py). Outdated tasks are otherwise left running.
        wanting = [t for t in tasks if wants_run(t)]
        live = [t for t in wanting if self.is_live(t)]
        draining = [t for t in wanting if self.draining(t)]
        # A task of the current spec is the slot's future: while it is not ready, the
        # outdated task it replaces (start-first) keeps running beside it.
        fresh = [t for t in live if updater.is_updated(t, service.spec)]
        if live:
            current = max(fresh or live, key=_live_rank)
        elif draining:
            current = max(draining, key=_live_rank)  # still runs: the move starts from it
        elif wanting:
            current = max(wanting, key=age_key)
        else:
            current = None
        # Start-first, for drains and rolling updates alike: the task a new one supersedes
        # (on a drained node, or of an outdated spec) keeps running until the new one is
        # ready. For drains this guards capacity as Kubernetes' eviction does (Swarm stops
        # first); a move that no node can take leaves the old task where it is.
        superseded = [t for t in draining if t is not current]
        if fresh:
            superseded += [t for t in live if t not in fresh]
        kept = None
        if superseded and current is not None and not model.is_ready(current):
            kept = max(superseded, key=_live_rank)
        for task in wanting:
            if task is not current and task is not kept:
                self.shut_down(task)  # duplicates after a node came back, superseded ends
        if current is None:
            if updater.waits_for_stop(service, tasks, self.facts):
                return  # stop-first: the replacement starts once the old task stopped
            current = self.create(service, slot, restart_count=0, replaces=None)
        elif replace is not None and live and not fresh:
            current = self.replace(service, slot, current, replace)
        elif not live:
            # Restart decisions (attempts, backoff) read the history that survives this
            # plan; otherwise deleting history could flip the decision on the next pass.
            doomed = set(self.doomed(service, current, tasks))
            kept = [t for t in tasks if t.id not in doomed and t.id not in self.deletes]
            next_count = max(t.restart_count for t in tasks) + 1
            current = self.restart(service, slot, current, kept, next_count)
        self.deletes.update(dict.fromkeys(self.doomed(service, current, tasks)))

    def replace(self, service: Service, slot: int, old: Task, order: int) -> Task:
        """Replace an outdated task for a rolling update. start-first: the new task now,
        the old one keeps running until it is ready; stop-first: the old one is shut down,
        and its replacement is created once it stopped (see slot())."""
        if order == updater.UpdateConfig.START_FIRST:
            new = self.create(service, slot, old.restart_count, replaces=old)
            new.status.message = f"updates {old.id}"
            return new
        self.shut_down(old)
        return old

    def restart(
        self, service: Service, slot: int, ended: Task, tasks: list[Task], next_count: int
    ) -> Task:
        """Restart the slot whose newest task `ended`, if the policy says so and its delay is
        over; `tasks` is the slot's kept history. Returns the slot's current task afterwards
        (the new one, or `ended`)."""
        if self.draining(ended):
            return self.move(service, slot, ended, tasks)
        policy = service.spec.restart_policy
        lost = self.node_lost(ended) and not is_terminal(ended.status.state)
        orphaned = lost or ended.status.state == types_pb2.ORPHANED
        if not should_restart(policy.condition, ended, orphaned):
            return ended
        if policy.max_attempts and not self.attempts_left(policy, ended, tasks):
            return ended
        if not orphaned:  # a lost node is not the task's fault: replace it at once
            due = ended_at(ended) + self.delay(policy, ended, tasks)
            if due > self.now:
                self.wake(due)
                return ended
        new = self.create(service, slot, restart_count=next_count, replaces=ended)
        self.shut_down(ended)
        return new

    def move(self, service: Service, slot: int, running: Task, tasks: list[Task]) -> Task:
        """Move a task off a drained node: whatever the policy, with the same restart count,
        and while it keeps running (it is shut down once the new task runs). A move whose
        task failed is retried after the restart delay, so a broken image does not spin."""
        failed = [t for t in tasks if age_key(t) > age_key(running) and is_terminal(t.status.state)]
        if failed:
            last = max(failed, key=age_key)
            due = ended_at(last) + self.delay(service.spec.restart_policy, last, tasks)
            if due > self.now:
                self.wake(due)
                return running
        new = self.create(service, slot, running.restart_count, replaces=running)
        new.status.message = f"moves {running.id} off drained node {running.node_id}"
        return new

    def attempts_left(
        self, policy: types_pb2.RestartPolicy, ended: Task, tasks: list[Task]
    ) -> bool:
        window = _dur(policy, "window") or timedelta(0)
        if window <= timedelta(0):
            return ended.restart_count < policy.max_attempts
        since = self.now - window
        # A restart is the first task with a new restart count (moves off drained nodes
        # keep the count); it happened when that task was created.
        first: dict[int, datetime] = {}
        for task in tasks:
            when = created_at(task)
            if task.restart_count > 0 and when > since:
                first[task.restart_count] = min(when, first.get(task.restart_count, when))
        restarts = sorted(first.values())
        if len(restarts) < policy.max_attempts:
            return True
        # Used up for now; the oldest counted restart leaves the window at this time.
        self.wake(restarts[len(restarts) - policy.max_attempts] + window)
        return False

    def delay(self, policy: types_pb2.RestartPolicy, ended: Task, tasks: list[Task]) -> timedelta:
        """The base delay doubled per consecutive restart of the slot, capped."""
        base = _dur(policy, "delay")
        if base is None:
            base = self.settings.restart_delay
        cap = _dur(policy, "max_delay")
        if not cap:
            cap = max(self.settings.restart_max_delay, base)
        exponent = max(self.consecutive_failures(ended, tasks) - 1, 0)
        return min(base * 2 ** min(exponent, _MAX_BACKOFF_EXPONENT), cap)

    def consecutive_failures(self, ended: Task, tasks: Sequence[Task]) -> int:
        """How many of the slot's newest ended tasks, in a row, ran shorter than
        backoff_reset_after (a task that never started counts as short). Tasks stopped on
        purpose (SHUTDOWN) or lost with their node end the run: they are no crash loop."""
        count = 0
        older = [t for t in tasks if t is not ended and age_key(t) < age_key(ended)]
        for task in [ended, *sorted(older, key=age_key, reverse=True)]:
            state = task.status.state
            if not is_terminal(state) or state in (types_pb2.ORPHANED, types_pb2.SHUTDOWN):
                break
            started = _ts(task.status, "started_at")
            if (
                started is not None
                and ended_at(task) - started >= self.settings.backoff_reset_after
            ):
                break
            count += 1
        return count

    def create(
        self, service: Service, slot: int, restart_count: int, replaces: Task | None
    ) -> Task:
        spec = service.spec
        task = Task(
            id=self.settings.new_id(),
            service_id=service.id,
            service_name=spec.name,
            slot=slot,
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

    def doomed(self, service: Service, current: Task, tasks: list[Task]) -> list[str]:
        """Ids of the slot's history to delete when `current` is its current task: the ones
        that never got a node, and the oldest terminal ones beyond the history limit."""
        history = [t for t in tasks if t is not current and t.id not in self.deletes]
        out = [t.id for t in history if self.holds_nothing(t)]
        rest = sorted((t for t in history if not self.holds_nothing(t)), key=age_key, reverse=True)
        limit = self.settings.task_history_limit
        policy = service.spec.restart_policy
        if policy.max_attempts and (_dur(policy, "window") or timedelta(0)) > timedelta(0):
            limit = max(limit, policy.max_attempts)  # restarts in the window are counted here
        out.extend(t.id for t in rest[limit:] if is_terminal(t.status.state))
        return out
