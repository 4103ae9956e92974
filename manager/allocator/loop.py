"""The leader's allocator loop: the IO shell around :func:`ipam.plan`.

Runs when tasks, networks or address leases change. Each allocated task is one group of
operations committed together: the task's update (state NEW -> PENDING, attachments with
address and MAC, err cleared), guarded by the revision the view holds, and one
create-if-absent per lease. So an address is recorded for exactly one task even when two
allocators race (a second leader that has not noticed it lost, or the concurrency test):
whoever commits second finds the lease key taken or the task changed, and plans again when
the winner's write arrives through the watch.

A task that cannot get its addresses stays NEW with the reason in status.err (written only
when the reason changes, so the loop does not feed itself). Leases of terminal or deleted
tasks are deleted, each guarded by its own revision; the freed addresses count as used
until that delete has landed.
"""

from __future__ import annotations

from datetime import datetime

from orch.manager.allocator import ipam
from orch.manager.loop import ControlLoop, PassResult
from orch.manager.state.api import Create, Delete, Kind, Op, Update


class AllocatorLoop(ControlLoop):
    name = "allocator"
    kinds = (Kind.TASK, Kind.NETWORK, Kind.LEASE)

    def plan(self, now: datetime) -> PassResult:
        networks = {n.spec.name: n for n in self.view.objects(Kind.NETWORK)}
        leases = list(self.view.objects(Kind.LEASE))
        decided = ipam.plan(list(self.view.objects(Kind.TASK)), networks, leases)
        groups: list[list[Op]] = []
        for name in decided.release:
            current = self.view.get(Kind.LEASE, name)
            if current is not None:
                groups.append([Delete(Kind.LEASE, current.key, current.mod_revision)])
        for allocation in decided.allocated:
            group = self._allocated(allocation, now)
            if group:
                groups.append(group)
        for waiting in decided.waiting:
            op = self._waiting(waiting, now)
            if op:
                groups.append([op])
        return PassResult(groups=groups)

    def _allocated(self, allocation: ipam.Allocation, now: datetime) -> list[Op]:
        current = self.view.get(Kind.TASK, allocation.task_id)
        if current is None:
            return []
        task = ipam.allocated(current.obj, allocation, now)
        ops: list[Op] = [Update(Kind.TASK, task, current.mod_revision)]
        ops += [Create(Kind.LEASE, lease) for lease in allocation.leases]
        return ops

    def _waiting(self, waiting: ipam.Unallocated, now: datetime) -> Op | None:
        current = self.view.get(Kind.TASK, waiting.task_id)
        task = ipam.unallocated(current.obj, waiting, now) if current else None
        return Update(Kind.TASK, task, current.mod_revision) if current and task else None
