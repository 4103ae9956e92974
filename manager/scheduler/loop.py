"""The leader's scheduler loop: the IO shell around :func:`scheduler.schedule`.

Runs when tasks or nodes change. Tasks waiting for a node (desired RUNNING, no node,
state PENDING: the allocator has given them their addresses; NEW tasks are not yet
allocated) get a node and state ASSIGNED; those that fit nowhere stay PENDING with the
reason in status.err, written only when the reason changes (so the loop does not feed
itself).
"""

from __future__ import annotations

from datetime import datetime

from orch import model
from orch.manager.loop import ControlLoop, PassResult
from orch.manager.scheduler.core import schedule
from orch.manager.state.store import Kind, Op, Update
from orch.proto import objects_pb2, types_pb2


class SchedulerLoop(ControlLoop):
    name = "scheduler"
    kinds = (Kind.TASK, Kind.NODE)

    def plan(self, now: datetime) -> PassResult:
        tasks = list(self.view.objects(Kind.TASK))
        waiting = [
            t
            for t in tasks
            if not t.node_id
            and t.desired_state == types_pb2.RUNNING
            and t.status.state == types_pb2.PENDING
        ]
        if not waiting:
            return PassResult([])
        assigned = [t for t in tasks if t.node_id]
        decisions = schedule(waiting, list(self.view.objects(Kind.NODE)), assigned)
        ops: list[Op] = []
        stamp = model.timestamp(now)
        for d in decisions:
            current = self.view.get(Kind.TASK, d.task_id)
            if current is None:
                continue
            task = objects_pb2.Task()
            task.CopyFrom(current.obj)
            if d.node_id:
                task.node_id = d.node_id
                task.status.CopyFrom(
                    objects_pb2.TaskStatus(
                        state=types_pb2.ASSIGNED, timestamp=stamp, message="assigned"
                    )
                )
            elif task.status.err != d.reason or task.status.state != types_pb2.PENDING:
                task.status.state = types_pb2.PENDING
                task.status.err = d.reason
                task.status.message = "waiting for a node"
                task.status.timestamp.CopyFrom(stamp)
            else:
                continue
            task.meta.updated_at.CopyFrom(stamp)
            ops.append(Update(Kind.TASK, task, current.mod_revision))
        return PassResult(ops)
