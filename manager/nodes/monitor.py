"""The leader's node monitor: marks nodes DOWN when their liveness record is gone, and
orphans the tasks of DOWN nodes.

The truth is in etcd, not in any manager's memory: every agent session keeps a leased key
``/orch/v1/liveness/<node>`` (dispatcher.py), refreshed by the agent's heartbeats. When the
lease expires etcd deletes the key and the watch tells the view; no timer polls. A node
whose key is gone and whose status is READY or DISCONNECTED becomes DOWN, in a write
guarded on the node's revision and on the key still being absent (a node that registers
again meanwhile wins).

A newly elected leader first gives every node a grace period (``grace``, one TTL by
default): while no manager ran, no dispatcher refreshed any lease, so every key may have
expired only because the managers were away; agents reconnect within that time.

Tasks of a DOWN node whose status is not terminal get status ORPHANED. Their agent cannot
report, so the leader writes the status here, the one exception to "the agent writes
status". The orchestrator then replaces them at once and sets their desired state to
SHUTDOWN; when the node comes back its agent is sent both, stops any container that
survived, and its SHUTDOWN report is dropped as a backwards move (ORPHANED > SHUTDOWN):
ORPHANED is the task's final state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orch import model
from orch.manager.loop import ControlLoop, PassResult
from orch.manager.state.store import Kind, Op, Unmodified, Update, Versioned
from orch.proto import objects_pb2, types_pb2

# Statuses a node leaves for DOWN once its liveness record is gone.
_WATCHED = (types_pb2.NODE_READY, types_pb2.NODE_DISCONNECTED)
# Tasks orphaned per transaction group (each group also guards the node's revision).
_GROUP = 40


@dataclass
class NodeMonitorSettings:
    grace: timedelta | None = None
    """How long a newly elected leader waits before it declares any node down; None: one
    liveness TTL (time for agents to re-register after all managers were away)."""


@dataclass
class MonitorPlan:
    down: list[str] = field(default_factory=list)
    """Ids of nodes to mark DOWN."""
    wake_at: datetime | None = None
    """When the grace period ends, if it holds a decision back."""


def decide(
    statuses: Mapping[str, int], alive: Set[str], *, now: datetime, grace_until: datetime
) -> MonitorPlan:
    """Which nodes go DOWN: those whose liveness record is gone (not in ``alive``) and
    whose status (``statuses``: node id -> NodeStatus) is READY or DISCONNECTED, once
    ``now`` is past the leader's grace period."""
    lost = sorted(n for n, state in statuses.items() if state in _WATCHED and n not in alive)
    if not lost:
        return MonitorPlan()
    if now < grace_until:
        return MonitorPlan(wake_at=grace_until)
    return MonitorPlan(down=lost)


def orphans(tasks: Iterable[objects_pb2.Task], down: Set[str]) -> list[objects_pb2.Task]:
    """Tasks on a DOWN node whose status is not terminal yet (to be orphan()ed)."""
    return [t for t in tasks if t.node_id in down and not model.is_terminal(t.status.state)]


def orphan(task: objects_pb2.Task, now: datetime) -> objects_pb2.Task:
    """A copy of ``task`` with status ORPHANED (the rest of the status kept: exit code,
    started_at)."""
    copy = objects_pb2.Task()
    copy.CopyFrom(task)
    copy.status.state = types_pb2.ORPHANED
    copy.status.message = f"node {task.node_id} is down"
    copy.status.err = "node down"
    copy.status.timestamp.FromDatetime(now)
    copy.status.finished_at.FromDatetime(now)
    copy.meta.updated_at.FromDatetime(now)
    return copy


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
