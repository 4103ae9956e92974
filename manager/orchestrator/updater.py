"""The rolling-update planner: which slots of a service to replace now, and where its
update stands. Pure: a service, its tasks, a few facts about nodes and `now` in, a Step
out; replicated.py calls it once per service and carries the Step out in the same plan
as everything else.

Semantics follow swarmkit's updater (manager/orchestrator/update/updater.go), reshaped
into a stateless reconcile so a new leader resumes an update where the old one left it:

* A task is *updated* when what it runs equals the service's spec: container (image,
  command, env, health check, ...), resources, networks, ports and placement. Replicas and
  service labels change no task. The restart policy does not either: the orchestrator
  applies the service's current policy to every task already, so replacing every task to
  change it would be churn for nothing (Swarm replaces them; we do not).
* The Control API starts an update (UpdateStatus UPDATING, `started_at`) when an Apply
  changes what tasks run, and a rollback (ROLLING_BACK) on `orch rollback`; nothing else
  does, so a paused update stays paused and a service created anew is no rollout.
* Slots are replaced in batches of `parallelism`. A batch starts when no slot is *busy*
  (a replacement not yet ready, an old task still stopping, a slot being refilled) and
  `delay` has passed since the previous batch was seen ready (`batch_ready_at`, recorded
  in the UpdateStatus: health changes carry no timestamp of their own). Ready
  (``model.is_ready``) means RUNNING, and HEALTHY when the task has a health check. Slots whose old task is not ready
  anyway go first: replacing them costs no capacity.
* stop-first: the old task is shut down, and the orchestrator creates its replacement only
  once it has stopped (`waits_for_stop`), so at most `parallelism` slots are down.
  start-first: the replacement is created at once and the old task keeps running until
  the replacement is ready, so no slot is ever down for the update.
* A task of the new spec, made during this update, that fails (FAILED, REJECTED, or
  UNHEALTHY) within `monitor` of its start is a failure. More failures than
  `max_failure_ratio` x replicas trigger `failure_action`: pause (PAUSED; what runs keeps
  running), rollback (spec := previous spec, ROLLING_BACK with the `rollback` settings), or
  continue (failed slots are left to the restart policy and the update moves on).
* When every slot is updated, the update completes `monitor` after the last batch was
  ready (failures within that window still count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from google.protobuf.message import Message

from orch import model
from orch.proto import objects_pb2, specs_pb2, types_pb2

Task = objects_pb2.Task
Service = objects_pb2.Service
ServiceSpec = specs_pb2.ServiceSpec
UpdateConfig = specs_pb2.UpdateConfig
UpdateStatus = objects_pb2.UpdateStatus

ACTIVE = (UpdateStatus.UPDATING, UpdateStatus.ROLLING_BACK)
"""Update states in which the planner replaces tasks."""


@dataclass(frozen=True)
class Config:
    """An UpdateConfig with its defaults filled in (Swarm's)."""

    parallelism: int = 1
    delay: timedelta = timedelta(0)
    order: int = UpdateConfig.STOP_FIRST
    monitor: timedelta = timedelta(seconds=5)
    failure_action: int = UpdateConfig.PAUSE
    max_failure_ratio: float = 0.0

    @classmethod
    def of(cls, msg: UpdateConfig | None) -> Config:
        if msg is None:
            return cls()
        return cls(
            parallelism=msg.parallelism,
            delay=msg.delay.ToTimedelta() if msg.HasField("delay") else timedelta(0),
            order=msg.order or UpdateConfig.STOP_FIRST,
            monitor=msg.monitor.ToTimedelta() if msg.HasField("monitor") else cls.monitor,
            failure_action=msg.failure_action or UpdateConfig.PAUSE,
            max_failure_ratio=msg.max_failure_ratio,
        )

    def batch(self, replicas: int) -> int:
        """Slots per batch: parallelism, 0 meaning all."""
        return self.parallelism or max(replicas, 1)


def config_for(service: Service) -> Config:
    """The settings of the running update: `update`, or for a rollback the `rollback`
    settings of the spec being rolled away from (the newest manifest the user wrote, now
    the previous spec), else of the spec rolled back to."""
    status = service.update_status
    if status.state in (
        UpdateStatus.ROLLING_BACK,
        UpdateStatus.ROLLBACK_PAUSED,
        UpdateStatus.ROLLBACK_COMPLETED,
    ):
        for spec in (service.previous_spec, service.spec):
            if spec.HasField("rollback"):
                return Config.of(spec.rollback)
        return Config()
    return Config.of(service.spec.update if service.spec.HasField("update") else None)


# -- facts about specs and tasks --------------------------------------------------------


def _has(msg: Message, name: str) -> bool:
    return name in msg.DESCRIPTOR.fields_by_name


def template_changed(old: ServiceSpec, new: ServiceSpec) -> bool:
    """Whether going from `old` to `new` needs new tasks (not just more or fewer)."""
    return any(
        getattr(old, f) != getattr(new, f) for f in model.TASK_TEMPLATE_FIELDS if _has(new, f)
    )


def is_updated(task: Task, spec: ServiceSpec) -> bool:
    """The task runs what `spec` asks for (replicas aside)."""
    return all(
        getattr(task, f) == getattr(spec, f)
        for f in model.TASK_TEMPLATE_FIELDS
        if _has(task, f) and _has(spec, f)
    )


def failures(service: Service, tasks: Iterable[Task], now: datetime) -> list[Task]:
    """Tasks of the current spec, made during this update, that failed or turned
    unhealthy within `monitor` of their start (never started counts as at once)."""
    started = model.time_of(service.update_status, "started_at") or model.EPOCH
    monitor = config_for(service).monitor
    out = []
    for task in tasks:
        if model.created_at(task) < started or not is_updated(task, service.spec):
            continue
        state = task.status.state
        if state in (types_pb2.FAILED, types_pb2.REJECTED):
            end = (
                model.time_of(task.status, "finished_at")
                or model.time_of(task.status, "timestamp")
                or now
            )
        elif not model.is_terminal(state) and task.status.health == types_pb2.HEALTH_UNHEALTHY:
            end = now
        else:
            continue
        begin = model.time_of(task.status, "started_at")
        if begin is None or end - begin <= monitor:
            out.append(task)
    return sorted(out, key=lambda t: (model.created_at(t), t.id))


# -- starting updates (the Control API) ------------------------------------------------


def _status(state: int, now: datetime, message: str) -> UpdateStatus:
    status = UpdateStatus(state=state, message=message)  # type: ignore[arg-type]
    status.started_at.FromDatetime(now)
    return status


def with_spec(service: Service, spec: ServiceSpec, now: datetime) -> Service:
    """A copy of `service` with its spec replaced as an Apply or Scale does: a new
    version; when the change needs new tasks, the old spec becomes the previous one (what
    `orch rollback` returns to) and an update starts. A change of replicas or labels alone
    keeps the previous spec and the update state: scaling is no rollout."""
    out = Service()
    out.CopyFrom(service)
    out.spec.CopyFrom(spec)
    out.meta.version += 1
    out.meta.updated_at.FromDatetime(now)
    if template_changed(service.spec, spec):
        out.previous_spec.CopyFrom(service.spec)
        out.update_status.CopyFrom(_status(UpdateStatus.UPDATING, now, "update started"))
    return out


def rolled_back(service: Service, now: datetime, reason: str) -> Service:
    """A copy of `service` going back to its previous spec (keeping today's replica
    count; the current spec becomes the previous one), as a rollback. Raises ValueError
    when there is no previous spec."""
    if not service.HasField("previous_spec"):
        raise ValueError(f"service {service.spec.name} has no previous spec to roll back to")
    out = Service()
    out.CopyFrom(service)
    out.spec.CopyFrom(service.previous_spec)
    out.spec.replicas = service.spec.replicas
    out.previous_spec.CopyFrom(service.spec)
    out.meta.version += 1
    out.meta.updated_at.FromDatetime(now)
    out.update_status.CopyFrom(_status(UpdateStatus.ROLLING_BACK, now, reason))
    return out


# -- the planner -------------------------------------------------------------------------


class Facts:
    """What the planner asks of the orchestrator about a task's node (the orchestrator's
    own predicates, so both agree)."""

    def __init__(
        self, *, is_live: Callable[[Task], bool], node_lost: Callable[[Task], bool]
    ) -> None:
        self.is_live = is_live
        self.node_lost = node_lost


@dataclass
class Step:
    """What the planner decided for one service in one pass."""

    replace: dict[int, int] = field(default_factory=dict)
    """Slot -> UpdateConfig.Order: replace the slot's outdated task now."""
    status: UpdateStatus | None = None
    """The new update status, when it changed."""
    rollback: bool = False
    """Roll back now: the orchestrator writes `rolled_back(service)` and nothing else for
    this service in this pass."""
    wake_at: datetime | None = None
    """When the planner must run again (a delay or the monitor window ends)."""


# Slot classes.
DONE, BUSY, PENDING, IDLE = "done", "busy", "pending", "idle"


def classify(
    service: Service, tasks: Sequence[Task], facts: Facts, *, continue_on_failure: bool = False
) -> str:
    """Where one slot stands in the update:

    DONE: an updated task is ready. BUSY: a replacement is under way (an updated task not
    yet ready, the old task stopping, the slot being refilled or restarted). PENDING: only
    outdated tasks hold it. IDLE: nothing to do (its task ended and is not restarted, or a
    failed replacement left to the restart policy under failure_action continue)."""
    spec = service.spec
    live = [t for t in tasks if facts.is_live(t)]
    fresh = [t for t in live if is_updated(t, spec)]
    if any(model.is_ready(t) for t in fresh):
        return DONE
    if fresh:
        return BUSY
    if live:
        return PENDING
    wanting = [t for t in tasks if t.desired_state <= types_pb2.RUNNING]
    if not wanting:
        return BUSY  # empty, or its old task is stopping: the orchestrator fills it
    current = max(wanting, key=lambda t: (model.created_at(t), t.restart_count, t.id))
    if not model.is_terminal(current.status.state):
        return BUSY  # on a lost or drained node: being replaced or moved
    if is_updated(current, spec) and not continue_on_failure:
        never = spec.restart_policy.condition == types_pb2.RESTART_NONE
        return IDLE if never else BUSY  # a failed replacement waiting for its restart
    return IDLE


def plan(
    service: Service, slots: Mapping[int, Sequence[Task]], now: datetime, facts: Facts
) -> Step:
    """The update step of `service` whose slots 1..replicas hold `slots` (all of their
    tasks, history included)."""
    status = service.update_status
    if status.state not in ACTIVE:
        return Step()
    rolling_back = status.state == UpdateStatus.ROLLING_BACK
    cfg = config_for(service)
    replicas = service.spec.replicas
    every = [t for tasks in slots.values() for t in tasks]

    failed = failures(service, every, now)
    if failed and cfg.failure_action != UpdateConfig.CONTINUE:
        if len(failed) > cfg.max_failure_ratio * replicas:
            return _on_failure(service, cfg, failed, now, rolling_back)

    started = model.time_of(status, "started_at") or model.EPOCH
    continuing = cfg.failure_action == UpdateConfig.CONTINUE
    classes = {
        slot: classify(service, slots.get(slot, ()), facts, continue_on_failure=continuing)
        for slot in range(1, replicas + 1)
    }
    if BUSY in classes.values():
        return Step()

    new = UpdateStatus()
    new.CopyFrom(status)
    fresh = [t for t in every if model.created_at(t) >= started and is_updated(t, service.spec)]
    last_start = max((model.created_at(t) for t in fresh), default=None)
    ready_at = model.time_of(status, "batch_ready_at")
    if last_start is not None and (ready_at is None or ready_at <= last_start):
        ready_at = now  # the batch started last is ready, seen now
        new.batch_ready_at.FromDatetime(now)

    pending = [s for s, c in classes.items() if c == PENDING]
    step = Step()
    if pending:
        due = now if ready_at is None or last_start is None else ready_at + cfg.delay
        if due > now:
            step.wake_at = due
        else:
            # Slots whose old task is not ready cost no capacity: they go first.
            def key(slot: int) -> tuple[bool, int]:
                live = [t for t in slots.get(slot, ()) if facts.is_live(t)]
                return (any(model.is_ready(t) for t in live), slot)

            for slot in sorted(pending, key=key)[: cfg.batch(replicas)]:
                step.replace[slot] = cfg.order
    else:
        due = now if ready_at is None else ready_at + cfg.monitor
        if due > now:
            step.wake_at = due
        else:
            new.state = UpdateStatus.ROLLBACK_COMPLETED if rolling_back else UpdateStatus.COMPLETED
            new.completed_at.FromDatetime(now)
            new.message = (
                f"rollback completed ({status.message})" if rolling_back else "update completed"
            )
    if new != status:
        step.status = new
    return step


def _on_failure(
    service: Service, cfg: Config, failed: list[Task], now: datetime, rolling_back: bool
) -> Step:
    last = failed[-1]
    unhealthy = last.status.health == types_pb2.HEALTH_UNHEALTHY
    why = last.status.err or ("unhealthy" if unhealthy else model.state_name(last.status.state))
    what = (
        f"{len(failed)} task{'s' if len(failed) != 1 else ''} failed "
        f"(last: {last.service_name}.{last.slot} {last.id[:12]}: {why})"
    )
    if (
        not rolling_back
        and cfg.failure_action == UpdateConfig.ROLLBACK
        and service.HasField("previous_spec")
    ):
        return Step(
            rollback=True,
            status=_status(UpdateStatus.ROLLING_BACK, now, f"update failed: {what}"),
        )
    new = UpdateStatus()
    new.CopyFrom(service.update_status)
    new.state = UpdateStatus.ROLLBACK_PAUSED if rolling_back else UpdateStatus.PAUSED
    new.completed_at.FromDatetime(now)
    new.message = f"{'rollback' if rolling_back else 'update'} paused: {what}"
    return Step(status=new)


def waits_for_stop(service: Service, tasks: Iterable[Task], facts: Facts) -> bool:
    """A slot with no task meant to run whose outdated task is still stopping, under a
    stop-first order (a stop-first replacement, or a service removed and made again with
    another spec): its new task is created only once the old one stopped. A task on a
    lost node is not waited for; start-first never waits."""
    if config_for(service).order == UpdateConfig.START_FIRST:
        return False
    return any(
        t.desired_state > types_pb2.RUNNING
        and not model.is_terminal(t.status.state)
        and t.node_id
        and not facts.node_lost(t)
        and not is_updated(t, service.spec)
        for t in tasks
    )


# -- progress (the Control API's read side) ---------------------------------------------


@dataclass(frozen=True)
class Progress:
    total: int
    updated: int
    running: int
    healthy: int
    failed: int


def progress(service: Service, tasks: Iterable[Task], now: datetime) -> Progress:
    """Counts for `orch rollout status`, from the tasks alone (nodes are not consulted:
    a task on a lost node still counts until the orchestrator replaces it)."""
    tasks = list(tasks)
    replicas = service.spec.replicas
    spec = service.spec
    updated = {
        t.slot
        for t in tasks
        if 1 <= t.slot <= replicas
        and model.is_live(t)
        and is_updated(t, spec)
        and model.is_ready(t)
    }
    running = [
        t
        for t in tasks
        if t.desired_state == types_pb2.RUNNING and t.status.state == types_pb2.RUNNING
    ]
    return Progress(
        total=replicas,
        updated=len(updated),
        running=len(running),
        healthy=sum(1 for t in running if model.is_ready(t)),
        failed=len(failures(service, tasks, now)) if service.update_status.state else 0,
    )
