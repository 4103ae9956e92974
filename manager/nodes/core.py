"""The node monitor's pure core: which nodes go DOWN (their liveness record is gone), and
which tasks of DOWN nodes become ORPHANED. Pure so the rules are tested on plain values,
without etcd or a clock; the leader's loop (loop.py) reads the view and writes the result.

The truth is in etcd, not in any manager's memory: every agent session keeps a leased key
``/orch/v1/liveness/<node>`` (dispatcher/server.py), refreshed by the agent's heartbeats.
When the lease expires etcd deletes the key and the watch tells the view; no timer polls.
A node whose key is gone and whose status is READY or DISCONNECTED becomes DOWN (the loop
writes it guarded on the key still being absent: a node that registers again wins).

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

from orch import model
from orch.proto import objects_pb2, types_pb2

# Statuses a node leaves for DOWN once its liveness record is gone.
_WATCHED = (types_pb2.NODE_READY, types_pb2.NODE_DISCONNECTED)


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
