"""Services -> tasks: the orchestrator's pure entry point, a function from a snapshot of
services, tasks and nodes (plus the time) to a Plan of task creations, desired-state
changes, deletions and service update-status writes.

Why pure: the leader's loop (loop.py, the IO shell) watches etcd, calls `reconcile` on a
consistent snapshot and applies the Plan in revision-guarded txns; on a conflict it just
reconciles again. Everything can therefore be tested without etcd and without a clock, and
the same function serves a dry run. The shape follows Nomad's reconciler (state in, plan
out) and swarmkit's orchestrators and restart supervisor (slots, restart policy, history).

This module only dispatches each service to its mode; the rules live in:

* plan.py: the Plan, the settings and the PlanBuilder every mode adds to (node facts,
  task creation and shutdown);
* slots.py: the slot rule (current task, restarts with backoff, moves off drained nodes,
  history), shared by both modes;
* replicated.py: slots 1..replicas and the rolling update (updater.py);
* global_mode.py: one slot per eligible node.

A service that no longer exists keeps no history: its tasks are shut down and deleted
once terminal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from orch.manager.orchestrator.global_mode import reconcile_global
from orch.manager.orchestrator.plan import OrchestratorSettings, Plan, PlanBuilder
from orch.manager.orchestrator.replicated import reconcile_replicated
from orch.proto import objects_pb2, specs_pb2

Task = objects_pb2.Task
Service = objects_pb2.Service
Node = objects_pb2.Node


def reconcile(
    services: Mapping[str, Service],
    tasks: Iterable[Task],
    nodes: Mapping[str, Node],
    now: datetime,
    settings: OrchestratorSettings | None = None,
) -> Plan:
    """Decide what to create, shut down and delete so every service has one live task per
    slot. `services` and `nodes` are keyed by id; `now` is naive-UTC or aware."""
    b = PlanBuilder(nodes, now if now.tzinfo else now.replace(tzinfo=UTC), settings)
    by_service: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        by_service[task.service_id].append(task)
    for service_id in sorted(set(services) | set(by_service)):
        service = services.get(service_id)
        service_tasks = by_service.get(service_id, [])
        if service is None:
            b.clear(service_tasks)
        elif service.spec.mode == specs_pb2.GLOBAL:
            reconcile_global(b, service, service_tasks)
        else:
            reconcile_replicated(b, service, service_tasks)
    return b.plan()
