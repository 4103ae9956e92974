"""The leader's node monitor loop: the IO shell around :func:`core.decide` and
:func:`core.orphans`.

Runs on changes to nodes, liveness records and tasks, and when the new leader's grace
period ends. A node goes DOWN in a write guarded on its revision and on its liveness key
still being absent (a node that registers again wins); the ORPHANED statuses of its tasks
are written in groups, each guarded on the node still being the DOWN node the view shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from datetime import datetime, timedelta
from typing import Any

from orch import model
from orch.manager.loop import ControlLoop, PassResult
from orch.manager.nodes.core import NodeMonitorSettings, decide, orphan, orphans
from orch.manager.state.api import Kind, Op, Unmodified, Update, Versioned
from orch.proto import objects_pb2, types_pb2

# Tasks orphaned per transaction group (each group also guards the node's revision).
_GROUP = 40


class NodeMonitorLoop(ControlLoop):
    name = "node-monitor"
    kinds = (Kind.NODE, Kind.LIVENESS, Kind.TASK)

    def __init__(
        self, *, settings_core: NodeMonitorSettings | None = None, liveness_ttl: int, **kw: Any
    ) -> None:
        super().__init__(**kw)
        grace = (settings_core or NodeMonitorSettings()).grace
        if grace is None:
            grace = timedelta(seconds=liveness_ttl)
        self.grace_until = self.clock() + grace  # a fresh grace for every new leader

    def plan(self, now: datetime) -> PassResult:
        nodes = {v.obj.id: v for v in self.view.items(Kind.NODE)}
        alive = {v.obj.id for v in self.view.items(Kind.LIVENESS)}
        decision = decide(
            {i: v.obj.status.state for i, v in nodes.items()},
            alive,
            now=now,
            grace_until=self.grace_until,
        )
        groups: list[list[Op]] = [self._mark_down(nodes[i]) for i in decision.down]
        down = {i for i, v in nodes.items() if v.obj.status.state == types_pb2.NODE_DOWN}
        groups.extend(self._orphan_groups(nodes, down, now))
        return PassResult(groups=groups, wake_at=decision.wake_at)

    def _mark_down(self, current: Versioned) -> list[Op]:
        node = objects_pb2.Node()
        node.CopyFrom(current.obj)
        node.status.state = types_pb2.NODE_DOWN
        node.status.message = "liveness lease expired"
        node.status.timestamp.CopyFrom(model.timestamp())
        # Only while the node has not registered again (its key is still absent).
        return [
            Update(Kind.NODE, node, current.mod_revision),
            Unmodified(Kind.LIVENESS.key(node.id), 0),
        ]

    def _orphan_groups(
        self, nodes: Mapping[str, Versioned], down: Set[str], now: datetime
    ) -> list[list[Op]]:
        """Orphan the tasks of DOWN nodes, each group guarded on its node still being the
        DOWN node the view shows (a node that came back keeps its tasks)."""
        by_node: dict[str, list[Op]] = {}
        for task in orphans(self.view.objects(Kind.TASK), down):
            current = self.view.get(Kind.TASK, task.id)
            if current is not None:
                by_node.setdefault(task.node_id, []).append(
                    Update(Kind.TASK, orphan(task, now), current.mod_revision)
                )
        groups: list[list[Op]] = []
        for node_id, ops in sorted(by_node.items()):
            guard = Unmodified(nodes[node_id].key, nodes[node_id].mod_revision)
            groups.extend([guard, *ops[i : i + _GROUP]] for i in range(0, len(ops), _GROUP))
        return groups
