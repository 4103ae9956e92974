"""Tasks in the Control API: `orch ps` and the names a person types for a task (an id or
a unique id prefix; for logs also a service or "service.slot"). Pure functions of the
view; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orch import model
from orch.errors import NotFoundError, ValidationError
from orch.manager.controlapi import services
from orch.manager.controlapi.decision import View
from orch.manager.state.api import Kind
from orch.proto import control_pb2, objects_pb2


def listing(view: View, request: control_pb2.ListTasksRequest) -> list[objects_pb2.Task]:
    """The tasks `orch ps` shows: of one service or all, current ones unless history is
    asked for; by service, slot, newest first."""
    tasks: Iterable[objects_pb2.Task] = view.objects(Kind.TASK)
    if request.service:
        services.get(view, request.service)
        tasks = (t for t in tasks if t.service_name == request.service)
    if not request.include_history:
        tasks = (t for t in tasks if model.is_current(t))
    return sorted(tasks, key=lambda t: (t.service_name, t.slot, -t.meta.created_at.seconds))


def resolve(view: View, ident: str) -> objects_pb2.Task:
    """The task with id ``ident``, else the one whose id starts with it."""
    tasks = list(view.objects(Kind.TASK))
    exact = [t for t in tasks if t.id == ident]
    return _one(ident, exact or [t for t in tasks if t.id.startswith(ident)])


def log_targets(view: View, target: str) -> list[objects_pb2.Task]:
    """A service name, "service.slot", or a task id (prefix): the tasks whose logs to
    read, those placed on a node."""
    if view.get(Kind.SERVICE, target):
        tasks = [t for t in view.objects(Kind.TASK) if t.service_name == target]
        return sorted((t for t in tasks if t.node_id), key=lambda t: t.slot)
    name, _, slot = target.rpartition(".")
    if name and slot.isdigit() and view.get(Kind.SERVICE, name):
        tasks = [
            t
            for t in view.objects(Kind.TASK)
            if t.service_name == name and t.slot == int(slot) and t.node_id
        ]
        if not tasks:
            raise NotFoundError(f"service {name} has no task in slot {slot}")
        return sorted(tasks, key=lambda t: t.meta.created_at.seconds)
    return [resolve(view, target)]


def _one(ident: str, matches: list) -> Any:
    if not matches:
        raise NotFoundError(f"no such task: {ident}")
    if len(matches) > 1:
        raise ValidationError(f"task id {ident!r} is ambiguous ({len(matches)} match)")
    return matches[0]
