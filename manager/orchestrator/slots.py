"""The slot rule: what one slot's tasks need, for replicated and global services alike.

Why one rule: a global service's "slot" is a node (slot 0, the tasks tied to it), but
whether a slot has a live task, which task is current, when an ended one restarts (policy,
attempts, backoff) and which history is kept are the same questions with the same answers.
replicated.py calls it per slot 1..N, global_mode.py per eligible node.

The model of one slot:

* A slot wants exactly one *live* task: desired RUNNING, observed state not terminal, and
  not on a node that is DOWN, no longer known, or drained.
* A slot's tasks other than its *current* one (the best live task, else its newest task
  desired RUNNING) are *history*: their desired state becomes SHUTDOWN (only ever raised)
  and the oldest terminal ones beyond `task_history_limit` are deleted. The agent writes
  observed status; we never do, except the NEW status of a task we create.
* A slot whose current task ended while still desired RUNNING is restarted per the
  service's *current* restart policy (the user's latest intent: switching to NONE stops a
  crash loop). A slot that is not restarted (condition NONE, attempts used up, delay not
  over) keeps the ended task desired RUNNING: that marks the slot as done or waiting, not
  empty. A lost node's tasks are replaced at once (unless NONE); a drained node's tasks are
  moved at once whatever the policy, start-first (the old task is shut down once its
  replacement is ready: running, and healthy where checked, as in a start-first rolling
  update), and a move is no restart.
* A task whose spec differs from the service's (replicas aside) is outdated. It keeps
  running until the rolling-update planner (updater.py) picks its slot: then start-first
  creates the replacement at once and keeps the old task until the new one is ready;
  stop-first shuts the old task down and creates the replacement once it stopped.

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

from collections.abc import Sequence
from datetime import datetime, timedelta

from orch import model
from orch.manager.orchestrator import updater
from orch.manager.orchestrator.plan import PlanBuilder, Slot, wants_run
from orch.proto import objects_pb2, types_pb2

Task = objects_pb2.Task
Service = objects_pb2.Service

_MAX_BACKOFF_EXPONENT = 30  # 5s * 2**30 is decades; keeps the arithmetic small


# -- task facts ---------------------------------------------------------------------------


def _dur(policy: types_pb2.RestartPolicy, name: str) -> timedelta | None:
    if not policy.HasField(name):
        return None
    return getattr(policy, name).ToTimedelta()


def ended_at(task: Task) -> datetime:
    """When the task ended: finished_at, else the time of its last status, else creation."""
    return (
        model.time_of(task.status, "finished_at")
        or model.time_of(task.status, "timestamp")
        or model.created_at(task)
    )


def age_key(task: Task) -> tuple[int, int, int, str]:
    """Sort key, oldest first: creation time, then the slot's restart counter, then id."""
    c = task.meta.created_at
    return (c.seconds, c.nanos, task.restart_count, task.id)


def progress_key(task: Task) -> tuple[int, tuple[int, int, int, str]]:
    """Sort key, least advanced first: observed state (RUNNING > STARTING > ... > NEW),
    then age. Of tasks that hold one slot, the max is the one to keep."""
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


# -- the rule -----------------------------------------------------------------------------


def fill(
    b: PlanBuilder, service: Service, slot: Slot, tasks: list[Task], replace: int | None = None
) -> None:
    """Add to ``b``'s plan what ``slot`` (holding ``tasks``, history included) needs.
    ``replace``: the update planner replaces this slot's outdated task now, in this order
    (updater.py). Outdated tasks are otherwise left running."""
    wanting = [t for t in tasks if wants_run(t)]
    live = [t for t in wanting if b.is_live(t)]
    draining = [t for t in wanting if b.draining(t)]
    # A task of the current spec is the slot's future: while it is not ready, the
    # outdated task it replaces (start-first) keeps running beside it.
    fresh = [t for t in live if updater.is_updated(t, service.spec)]
    if live:
        current = max(fresh or live, key=progress_key)
    elif draining:
        current = max(draining, key=progress_key)  # still runs: the move starts from it
    elif wanting:
        current = max(wanting, key=age_key)
    else:
        current = None
    # Start-first, for drains and rolling updates alike: the task a new one supersedes
    # (on a drained node, or of an outdated spec) keeps running until the new one is
    # ready. For drains this guards capacity as Kubernetes' eviction does (Swarm stops
    # first); a move that no node can take leaves the old task where it is. Only a live
    # current task is new: a draining one is itself what keeps running until its move is
    # ready, and other draining tasks beside it are duplicates (a move whose own new node
    # was drained before its task got going).
    superseded = [t for t in draining if t is not current]
    if fresh:
        superseded += [t for t in live if t not in fresh]
    kept = None
    if superseded and live and not model.is_ready(current):
        kept = max(superseded, key=progress_key)
    for task in wanting:
        if task is not current and task is not kept:
            b.shut_down(task)  # duplicates after a node came back, superseded ends
    if current is None:
        if updater.waits_for_stop(service, tasks, b.facts):
            return  # stop-first: the replacement starts once the old task stopped
        current = b.create(service, slot, restart_count=0, replaces=None)
    elif replace is not None and live and not fresh:
        current = _replace(b, service, slot, current, replace)
    elif not live:
        # Restart decisions (attempts, backoff) read the history that survives this
        # plan; otherwise deleting history could flip the decision on the next pass.
        doomed = set(_doomed(b, service, current, tasks))
        kept_history = [t for t in tasks if t.id not in doomed and t.id not in b.deletes]
        next_count = max(t.restart_count for t in tasks) + 1
        current = _restart(b, service, slot, current, kept_history, next_count)
    b.deletes.update(dict.fromkeys(_doomed(b, service, current, tasks)))


def _replace(b: PlanBuilder, service: Service, slot: Slot, old: Task, order: int) -> Task:
    """Replace an outdated task for a rolling update. start-first: the new task now,
    the old one keeps running until it is ready; stop-first: the old one is shut down,
    and its replacement is created once it stopped (see fill())."""
    if order == updater.UpdateConfig.START_FIRST:
        new = b.create(service, slot, old.restart_count, replaces=old)
        new.status.message = f"updates {old.id}"
        return new
    b.shut_down(old)
    return old


def _restart(
    b: PlanBuilder, service: Service, slot: Slot, ended: Task, tasks: list[Task], next_count: int
) -> Task:
    """Restart the slot whose newest task `ended`, if the policy says so and its delay is
    over; `tasks` is the slot's kept history. Returns the slot's current task afterwards
    (the new one, or `ended`)."""
    if b.draining(ended):
        return _move(b, service, slot, ended, tasks)
    policy = service.spec.restart_policy
    lost = b.node_lost(ended) and not model.is_terminal(ended.status.state)
    orphaned = lost or ended.status.state == types_pb2.ORPHANED
    if not should_restart(policy.condition, ended, orphaned):
        return ended
    if policy.max_attempts and not _attempts_left(b, policy, ended, tasks):
        return ended
    if not orphaned:  # a lost node is not the task's fault: replace it at once
        due = ended_at(ended) + _delay(b, policy, ended, tasks)
        if due > b.now:
            b.wake(due)
            return ended
    new = b.create(service, slot, restart_count=next_count, replaces=ended)
    b.shut_down(ended)
    return new


def _move(b: PlanBuilder, service: Service, slot: Slot, running: Task, tasks: list[Task]) -> Task:
    """Move a task off a drained node: whatever the policy, with the same restart count,
    and while it keeps running (it is shut down once the new task runs). A move whose
    task failed is retried after the restart delay, so a broken image does not spin."""
    failed = [
        t for t in tasks if age_key(t) > age_key(running) and model.is_terminal(t.status.state)
    ]
    if failed:
        last = max(failed, key=age_key)
        due = ended_at(last) + _delay(b, service.spec.restart_policy, last, tasks)
        if due > b.now:
            b.wake(due)
            return running
    new = b.create(service, slot, running.restart_count, replaces=running)
    new.status.message = f"moves {running.id} off drained node {running.node_id}"
    return new


def _attempts_left(
    b: PlanBuilder, policy: types_pb2.RestartPolicy, ended: Task, tasks: list[Task]
) -> bool:
    window = _dur(policy, "window") or timedelta(0)
    if window <= timedelta(0):
        return ended.restart_count < policy.max_attempts
    since = b.now - window
    # A restart is the first task with a new restart count (moves off drained nodes
    # keep the count); it happened when that task was created.
    first: dict[int, datetime] = {}
    for task in tasks:
        when = model.created_at(task)
        if task.restart_count > 0 and when > since:
            first[task.restart_count] = min(when, first.get(task.restart_count, when))
    restarts = sorted(first.values())
    if len(restarts) < policy.max_attempts:
        return True
    # Used up for now; the oldest counted restart leaves the window at this time.
    b.wake(restarts[len(restarts) - policy.max_attempts] + window)
    return False


def _delay(
    b: PlanBuilder, policy: types_pb2.RestartPolicy, ended: Task, tasks: list[Task]
) -> timedelta:
    """The base delay doubled per consecutive restart of the slot, capped."""
    base = _dur(policy, "delay")
    if base is None:
        base = b.settings.restart_delay
    cap = _dur(policy, "max_delay")
    if not cap:
        cap = max(b.settings.restart_max_delay, base)
    exponent = max(_consecutive_failures(b, ended, tasks) - 1, 0)
    return min(base * 2 ** min(exponent, _MAX_BACKOFF_EXPONENT), cap)


def _consecutive_failures(b: PlanBuilder, ended: Task, tasks: Sequence[Task]) -> int:
    """How many of the slot's newest ended tasks, in a row, ran shorter than
    backoff_reset_after (a task that never started counts as short). Tasks stopped on
    purpose (SHUTDOWN) or lost with their node end the run: they are no crash loop."""
    count = 0
    older = [t for t in tasks if t is not ended and age_key(t) < age_key(ended)]
    for task in [ended, *sorted(older, key=age_key, reverse=True)]:
        state = task.status.state
        if not model.is_terminal(state) or state in (types_pb2.ORPHANED, types_pb2.SHUTDOWN):
            break
        started = model.time_of(task.status, "started_at")
        if started is not None and ended_at(task) - started >= b.settings.backoff_reset_after:
            break
        count += 1
    return count


def _doomed(b: PlanBuilder, service: Service, current: Task, tasks: list[Task]) -> list[str]:
    """Ids of the slot's history to delete when `current` is its current task: the ones
    that never got a node, and the oldest terminal ones beyond the history limit."""
    history = [t for t in tasks if t is not current and t.id not in b.deletes]
    out = [t.id for t in history if b.holds_nothing(t)]
    rest = sorted((t for t in history if not b.holds_nothing(t)), key=age_key, reverse=True)
    limit = b.settings.task_history_limit
    policy = service.spec.restart_policy
    if policy.max_attempts and (_dur(policy, "window") or timedelta(0)) > timedelta(0):
        limit = max(limit, policy.max_attempts)  # restarts in the window are counted here
    out.extend(t.id for t in rest[limit:] if model.is_terminal(t.status.state))
    return out
