"""Replicated services: slots 1..replicas, each filled by the slot rule (slots.py), and
the rolling update that decides which slots replace their outdated task now.

Why apart from the slot rule: what is particular to a replicated service is the set of
slots (scale up and down) and the rolling update (updater.py); what one slot needs is
shared with global services. Slots above `replicas` keep no history: their tasks are shut
down and deleted once terminal. The planner's update status (and an automatic rollback's
spec) is written with the plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from orch.manager.orchestrator import slots, updater
from orch.manager.orchestrator.plan import PlanBuilder, Slot
from orch.proto import objects_pb2

Task = objects_pb2.Task
Service = objects_pb2.Service


def reconcile_replicated(b: PlanBuilder, service: Service, tasks: list[Task]) -> None:
    """Add to ``b``'s plan what the replicated ``service`` needs: one live task per slot
    1..replicas, none above."""
    replicas = service.spec.replicas
    by_slot: dict[int, list[Task]] = defaultdict(list)
    for task in tasks:
        by_slot[task.slot].append(task)
    step = _update_step(b, service, by_slot)
    if step is None:
        return  # rolled back: the restored spec is planned on the next pass
    out_of_range = sorted(s for s in by_slot if not 1 <= s <= replicas)
    # Highest slots first: a plan applied in several txns scales down from the top.
    for number in reversed(out_of_range):
        b.clear(by_slot[number])
    for number in range(1, replicas + 1):
        slots.fill(b, service, Slot(number), by_slot.get(number, []), step.replace.get(number))


def _update_step(
    b: PlanBuilder, service: Service, by_slot: Mapping[int, list[Task]]
) -> updater.Step | None:
    """The rolling-update planner's step for the service (which outdated slots to replace
    now), with its status write planned; None when it rolls back: then only the service is
    written in this pass."""
    in_range = {s: by_slot.get(s, []) for s in range(1, service.spec.replicas + 1)}
    step = updater.plan(service, in_range, b.now, b.facts)
    if step.wake_at is not None:
        b.wake(step.wake_at)
    if step.rollback:
        reason = step.status.message if step.status else "update failed"
        b.services.append(updater.rolled_back(service, b.now, reason))
        return None
    if step.status is not None:
        written = Service()
        written.CopyFrom(service)
        written.update_status.CopyFrom(step.status)
        b.services.append(written)
    return step
