"""Services in the Control API: what Apply, Scale, Rollback and RemoveService write, and
what `orch ls` and `orch inspect service` show. Pure functions of the view; server.py
commits.

A spec equal to the stored one writes nothing; a changed one is a new version through
updater.with_spec, which starts a rolling update when the change needs new tasks (a
change of replicas or labels alone just scales). Every write is guarded by the revision
the view holds, so a concurrent writer makes this one lose and decide again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from orch import model
from orch.errors import NotFoundError, PreconditionError, ValidationError
from orch.manager.controlapi import hosts
from orch.manager.controlapi.decision import Decision, View, change
from orch.manager.orchestrator import updater
from orch.manager.state.api import Create, Delete, Kind, Update, Versioned
from orch.manifests import validate
from orch.proto import control_pb2, objects_pb2, specs_pb2


def normalize(spec: specs_pb2.ServiceSpec) -> specs_pb2.ServiceSpec:
    """A copy with the defaults of ports filled in (tcp, mode host), so a spec sent by a
    client that leaves them out is stored as the manifest loader would send it."""
    out = specs_pb2.ServiceSpec()
    out.CopyFrom(spec)
    for port in out.ports:
        port.protocol = port.protocol or "tcp"
        port.mode = port.mode or "host"
    return out


def get(view: View, name: str) -> Versioned:
    current = view.get(Kind.SERVICE, name)
    if current is None:
        raise NotFoundError(f"no such service: {name}")
    return current


def new_service(spec: specs_pb2.ServiceSpec, now: datetime) -> objects_pb2.Service:
    stamp = model.timestamp(now)
    meta = objects_pb2.Meta(version=1, created_at=stamp, updated_at=stamp)
    return objects_pb2.Service(id=model.new_id(), meta=meta, spec=spec)


def decide_spec(view: View, spec: specs_pb2.ServiceSpec, now: datetime) -> Decision:
    """Create the service, or make ``spec`` its next version, or nothing when equal."""
    current = view.get(Kind.SERVICE, spec.name)
    what = change(Kind.SERVICE, current, spec)
    if current is None:
        return Decision([Create(Kind.SERVICE, new_service(spec, now))], [what])
    if what.action == "unchanged":
        return Decision([], [what])
    service = updater.with_spec(current.obj, spec, now)  # previous spec, rolling update
    return Decision([Update(Kind.SERVICE, service, current.mod_revision)], [what])


def decide_specs(view: View, specs: Sequence[specs_pb2.ServiceSpec], now: datetime) -> Decision:
    decision = Decision()
    for spec in specs:
        decision += decide_spec(view, spec, now)
    return decision


def check_scale(request: control_pb2.ScaleRequest) -> None:
    """ValidationError for what is wrong with the request itself, before any read: a
    replicas count of 2**64-1 would have the leader plan every slot until it runs out of
    memory, and every next leader after it."""
    problems = validate.scale_problems(request.replicas)
    if problems:
        raise ValidationError(problems)


def decide_scale(view: View, request: control_pb2.ScaleRequest, now: datetime) -> Decision:
    """All the services of the request scaled, or none (NotFoundError, ValidationError)."""
    missing = sorted(n for n in request.replicas if view.get(Kind.SERVICE, n) is None)
    if missing:
        raise NotFoundError(f"no such service: {', '.join(missing)}")
    decision = Decision()
    for name, replicas in sorted(request.replicas.items()):
        current = get(view, name)
        if current.obj.spec.mode == specs_pb2.GLOBAL:
            raise ValidationError(
                f"service {name} is global: it runs one task on every eligible "
                "node and cannot be scaled (constraints choose its nodes)"
            )
        spec = specs_pb2.ServiceSpec()
        spec.CopyFrom(current.obj.spec)
        spec.replicas = replicas
        decision += decide_spec(view, spec, now)
    return decision


def decide_rollback(
    view: View, name: str, now: datetime, reserved_ports: Collection[int] = ()
) -> Decision:
    """Back to the previous spec, held to the checks an Apply of it would meet against the
    view now (a port reserved since then stays unpublished)."""
    current = get(view, name)
    if not current.obj.HasField("previous_spec"):
        raise PreconditionError(
            f"service {name} has no previous spec to roll back to (it has "
            "not been updated since it was created)"
        )
    problems = hosts.port_problems(view, [current.obj.previous_spec], reserved_ports)
    if problems:
        raise ValidationError(problems)
    service = updater.rolled_back(current.obj, now, "rollback requested")
    return Decision([Update(Kind.SERVICE, service, current.mod_revision)])


def decide_removal(view: View, name: str) -> Decision:
    current = get(view, name)
    return Decision([Delete(Kind.SERVICE, current.key, current.mod_revision)])


def info(view: View, service: objects_pb2.Service, now: datetime) -> control_pb2.ServiceInfo:
    """A service with its replica and rollout counts, from the view's tasks."""
    tasks = [t for t in view.objects(Kind.TASK) if t.service_id == service.id]
    p = updater.progress(service, tasks, now)
    rollout = control_pb2.RolloutProgress(
        total=p.total, updated=p.updated, running=p.running, healthy=p.healthy, failed=p.failed
    )
    return control_pb2.ServiceInfo(service=service, replicas_running=p.running, rollout=rollout)
