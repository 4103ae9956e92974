"""The leader's scheduler loop: the IO shell around :func:`scheduler.schedule`.

Runs when tasks or nodes change. Tasks waiting for a node (desired RUNNING, no node,
state PENDING: the allocator has given them their addresses; NEW tasks are not yet
allocated) get a node and state ASSIGNED; those that fit nowhere stay PENDING with the
reason in status.err, written only when the reason changes (so the loop does not feed
itself).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orch.manager.loop import ControlLoop, PassResult
from orch.manager.scheduler.core import SchedulerSettings, decided, schedule, waiting
from orch.manager.state.api import Kind, Op, Update


class SchedulerLoop(ControlLoop):
    name = "scheduler"
    kinds = (Kind.TASK, Kind.NODE)

    def __init__(self, *, settings_core: SchedulerSettings | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self._core = settings_core or SchedulerSettings()

    def plan(self, now: datetime) -> PassResult:
        tasks = list(self.view.objects(Kind.TASK))
        pending = waiting(tasks)
        if not pending:
            return PassResult([])
        assigned = [t for t in tasks if t.node_id]
        ops: list[Op] = []
        nodes = list(self.view.objects(Kind.NODE))
        for d in schedule(pending, nodes, assigned, self._core):
            current = self.view.get(Kind.TASK, d.task_id)
            task = decided(current.obj, d, now) if current else None
            if current and task:
                ops.append(Update(Kind.TASK, task, current.mod_revision))
        return PassResult(ops)
