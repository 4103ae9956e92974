"""The leader's orchestrator loop: the IO shell around :func:`orchestrator.reconcile`.

Runs on changes to services, tasks and nodes, and when a restart delay (or a rolling
update's delay or monitor window) is due. The plan's creates are create-if-absent, its
desired-state changes, deletes and service writes (update status, rollback) are guarded by
the revision the view holds, all fenced on the leader key. A service write goes first: if
a user's Apply won the race, the whole pass is decided again over the new spec.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from orch.manager.loop import ControlLoop, PassResult
from orch.manager.orchestrator.core import reconcile
from orch.manager.orchestrator.plan import OrchestratorSettings, Plan
from orch.manager.state.api import Create, Delete, Kind, Op, Update, Versioned


class OrchestratorLoop(ControlLoop):
    name = "orchestrator"
    kinds = (Kind.SERVICE, Kind.TASK, Kind.NODE)

    def __init__(self, *, settings_core: OrchestratorSettings | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self._core = settings_core or OrchestratorSettings()

    def plan(self, now: datetime) -> PassResult:
        services = {s.id: s for s in self.view.objects(Kind.SERVICE)}
        nodes = {n.id: n for n in self.view.objects(Kind.NODE)}
        plan = reconcile(services, list(self.view.objects(Kind.TASK)), nodes, now, self._core)
        return PassResult(writes(plan, self.view.get), plan.wake_at)


def writes(plan: Plan, get: Callable[[Kind, str], Versioned | None]) -> list[Op]:
    """The operations that commit ``plan`` over the objects ``get`` returns (by kind and
    name): service writes first (if a user's Apply won the race, the whole pass is decided
    again), creates-if-absent, then updates and deletes guarded by the revision held.
    Objects gone meanwhile are skipped: their deletion is on its way through the watch."""
    ops: list[Op] = []
    for service in plan.services:
        current = get(Kind.SERVICE, service.spec.name)
        if current and current.obj.id == service.id:
            ops.append(Update(Kind.SERVICE, service, current.mod_revision))
    ops += [Create(Kind.TASK, t) for t in plan.create]
    for task in plan.update:
        current = get(Kind.TASK, task.id)
        if current:
            ops.append(Update(Kind.TASK, task, current.mod_revision))
    for task_id in plan.delete:
        current = get(Kind.TASK, task_id)
        if current:
            ops.append(Delete(Kind.TASK, current.key, current.mod_revision))
    return ops
