"""The Control API: what `orch` calls. Every manager serves it, leader or not.

Reads come from the manager's ClusterView. Writes validate everything first, then go to
etcd in ONE guarded transaction, so a bad request or a lost race changes nothing; after a
write the handler waits until its own view has the new revision, so the next call from
the same client sees it. A write that loses a race is decided again over the newer view a
few times (concurrent applies creating networks race for VNIs and subnets). Network
handling lives in controlapi_networks.py, node handling in controlapi_nodes.py. Errors leave here as gRPC status codes with a
message meant for a person (INVALID_ARGUMENT carries one problem per line,
FAILED_PRECONDITION says who still uses what is to be removed).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from orch import model
from orch.errors import ConflictError, NotFoundError, OrchError, StoreError, ValidationError
from orch.manager import controlapi_networks as networks
from orch.manager import controlapi_nodes as nodes
from orch.manager.controlapi_networks import InUseError
from orch.manager.ipam import IpamSettings
from orch.manager.logbroker import LogBroker
from orch.manager.store import Create, Delete, Kind, Op, Store, Update, Versioned
from orch.manager.view import ClusterView
from orch.manifests.validate import (
    port_clashes,
    port_text,
    validate_network_spec,
    validate_service_spec,
)
from orch.proto import control_pb2, control_pb2_grpc, objects_pb2, specs_pb2, types_pb2

log = logging.getLogger(__name__)

_STATUS = {
    InUseError: grpc.StatusCode.FAILED_PRECONDITION,  # before ConflictError, its base
    ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    ConflictError: grpc.StatusCode.ABORTED,
    StoreError: grpc.StatusCode.UNAVAILABLE,
}


async def _abort(context: Any, exc: OrchError) -> None:
    """End the call with the status code of ``exc``'s kind and its message."""
    code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), None)
    await context.abort(code or grpc.StatusCode.INTERNAL, str(exc))


def _grpc_errors(handler: Callable) -> Callable:
    """Translate orch errors into gRPC status codes with a readable message."""

    async def wrapper(self: ControlAPI, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except OrchError as exc:
            await _abort(context, exc)

    wrapper.__name__ = handler.__name__
    return wrapper


def spec_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Top-level-ish field paths where two spec messages differ: ["replicas",
    "container.image"]. Empty when equal."""
    if old == new:
        return []
    changed = []
    for field in new.DESCRIPTOR.fields:
        a, b = getattr(old, field.name), getattr(new, field.name)
        if a == b:
            continue
        path = prefix + field.name
        nested = field.type == field.TYPE_MESSAGE and not field.is_repeated
        if nested and path.count(".") < 1:
            changed += spec_changes(a, b, path + ".") or [path]
        else:
            changed.append(path)
    return changed


@dataclass(frozen=True)
class ControlSettings:
    """Tunables of the Control API."""

    ipam: IpamSettings = dataclasses.field(default_factory=IpamSettings)
    """Where new networks get their subnet and VNI."""
    apply_attempts: int = 8
    """Times an Apply, a network removal or a node update or removal decides again after
    its transaction lost a race (another Apply created a network meanwhile, the dispatcher
    refreshed the node's status); each lost race means another writer made progress."""


class ControlAPI(control_pb2_grpc.ControlServicer):
    def __init__(
        self,
        *,
        store: Store,
        view: ClusterView,
        logs: LogBroker,
        settings: ControlSettings | None = None,
        leader: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self._store = store
        self._leader = leader
        self._view = view
        self._logs = logs
        self._settings = settings or ControlSettings()

    # Writes.

    @_grpc_errors
    async def Apply(self, request: control_pb2.ApplyRequest, context: Any) -> Any:
        nets = [networks.normalize(s) for s in request.networks]
        services = [_normalize_service(s) for s in request.services]
        problems = []
        for i, spec in enumerate(nets):
            problems += [f"networks[{i}] ({spec.name}): {p}" for p in validate_network_spec(spec)]
        for i, spec in enumerate(services):
            problems += [f"services[{i}] ({spec.name}): {p}" for p in validate_service_spec(spec)]
        problems += _duplicates("network", [s.name for s in nets])
        problems += _duplicates("service", [s.name for s in services])
        for index, earlier, key in port_clashes(services):
            problems.append(
                f"services[{index}] ({services[index].name}): published port {port_text(key)} "
                f"is also published by service {services[earlier].name!r} in this apply"
            )
        if problems:
            raise ValidationError(problems)
        decided: list[control_pb2.Change] = []

        def decide() -> list[Op]:
            ops, changes = self._decide_apply(nets, services)
            decided[:] = changes
            return [] if request.dry_run else ops

        await self._commit_decided(decide)
        return control_pb2.ApplyResponse(changes=decided)

    async def _commit_decided(self, decide: Callable[[], list[Op]]) -> None:
        """Commit what ``decide`` (a function of the view) returns; when the transaction
        loses a race, catch up with etcd and decide again, a few times. Returns once the
        view holds the write."""
        for attempt in range(1, self._settings.apply_attempts + 1):
            ops = decide()
            if not ops:
                return
            try:
                revision = await self._store.commit(ops)
            except ConflictError:
                if attempt == self._settings.apply_attempts:
                    raise
                await self._view.wait_for(await self._store.revision())
                continue
            await self._view.wait_for(revision)
            return

    def _decide_apply(
        self, nets: list[specs_pb2.NetworkSpec], services: list[specs_pb2.ServiceSpec]
    ) -> tuple[list[Op], list[control_pb2.Change]]:
        """The writes of an Apply over the view as it is now (no awaits: one snapshot)."""
        problems = networks.immutable_problems(nets, self._view)
        problems += networks.overlap_problems(nets, self._view)
        problems += self._unknown_networks(nets, services)
        if problems:
            raise ValidationError(problems)
        writes = networks.network_writes(nets, self._view, self._settings.ipam, self._apply_one)
        ops, changes = list(writes.ops), list(writes.changes)
        for spec in services:
            ops += self._apply_one(Kind.SERVICE, spec, changes, _new_service)
        if any(isinstance(op, Create | Update) for op in ops):
            created = {n.spec.name for n in writes.created}
            ops += networks.joined_guards(services, created, self._view)
        return ops, changes

    @_grpc_errors
    async def Scale(self, request: control_pb2.ScaleRequest, context: Any) -> Any:
        missing = sorted(n for n in request.replicas if not self._view.get(Kind.SERVICE, n))
        if missing:
            raise NotFoundError(f"no such service: {', '.join(missing)}")
        ops: list[Op] = []
        changes = []
        for name, replicas in sorted(request.replicas.items()):
            current = self._view.get(Kind.SERVICE, name)
            assert current is not None
            spec = specs_pb2.ServiceSpec()
            spec.CopyFrom(current.obj.spec)
            spec.replicas = replicas
            ops += self._apply_one(Kind.SERVICE, spec, changes, _new_service)
        if ops:
            revision = await self._store.commit(ops)
            await self._view.wait_for(revision)
        return control_pb2.ScaleResponse(changes=changes)

    @_grpc_errors
    async def RemoveService(self, request: control_pb2.RemoveServiceRequest, context: Any) -> Any:
        current = self._service(request.name)
        revision = await self._store.commit(
            [Delete(Kind.SERVICE, current.key, current.mod_revision)]
        )
        await self._view.wait_for(revision)
        return control_pb2.RemoveServiceResponse()

    def _apply_one(
        self,
        kind: Kind,
        spec: Any,
        changes: list[control_pb2.Change],
        make: Callable[[Any], Any],
    ) -> list[Op]:
        label = kind.folder.rstrip("s")
        current = self._view.get(kind, spec.name)
        if current is None:
            changes.append(control_pb2.Change(kind=label, name=spec.name, action="create"))
            return [Create(kind, make(spec))]
        fields = spec_changes(current.obj.spec, spec)
        if not fields:
            changes.append(control_pb2.Change(kind=label, name=spec.name, action="unchanged"))
            return []
        changes.append(
            control_pb2.Change(kind=label, name=spec.name, action="update", fields=fields)
        )
        updated = type(current.obj)()
        updated.CopyFrom(current.obj)
        if kind is Kind.SERVICE:
            updated.previous_spec.CopyFrom(current.obj.spec)
        updated.spec.CopyFrom(spec)
        updated.meta.version += 1
        updated.meta.updated_at.CopyFrom(model.timestamp())
        return [Update(kind, updated, current.mod_revision)]

    def _unknown_networks(
        self, nets: list[specs_pb2.NetworkSpec], services: list[specs_pb2.ServiceSpec]
    ) -> list[str]:
        known = {n.name for n in nets} | {v.obj.spec.name for v in self._view.items(Kind.NETWORK)}
        builtin = {"bridge", "host", "none"}
        problems = []
        for i, spec in enumerate(services):
            for j, net in enumerate(spec.networks):
                if net.target not in builtin | known:
                    problems.append(
                        f"services[{i}] ({spec.name}): networks[{j}]: no network named "
                        f"{net.target!r} (accepted: bridge, host, none, or a network in this "
                        "apply or already created)"
                    )
        return problems

    @_grpc_errors
    async def RemoveNetwork(self, request: control_pb2.RemoveNetworkRequest, context: Any) -> Any:
        await self._commit_decided(lambda: networks.removal_ops(self._view, request.name))
        return control_pb2.RemoveNetworkResponse()

    @_grpc_errors
    async def UpdateNode(self, request: control_pb2.UpdateNodeRequest, context: Any) -> Any:
        nodes.check_update(request)
        result: list[objects_pb2.Node] = []

        def decide() -> list[Op]:
            ops, node = nodes.update_ops(self._view, request)
            result[:] = [node]
            return ops

        await self._commit_decided(decide)
        return result[0]

    @_grpc_errors
    async def RemoveNode(self, request: control_pb2.RemoveNodeRequest, context: Any) -> Any:
        await self._commit_decided(lambda: nodes.removal_ops(self._view, request))
        return control_pb2.RemoveNodeResponse()

    # Reads.

    @_grpc_errors
    async def ListNetworks(self, request: Any, context: Any) -> Any:
        infos = [
            networks.network_info(self._view, n)
            for n in sorted(self._view.objects(Kind.NETWORK), key=lambda n: n.spec.name)
        ]
        return control_pb2.ListNetworksResponse(networks=infos)

    @_grpc_errors
    async def GetNetwork(self, request: control_pb2.GetNetworkRequest, context: Any) -> Any:
        return networks.network_info(self._view, networks.get(self._view, request.name))

    @_grpc_errors
    async def ListServices(self, request: Any, context: Any) -> Any:
        running = self._running_by_service()
        infos = [
            control_pb2.ServiceInfo(service=v.obj, replicas_running=running.get(v.obj.id, 0))
            for v in sorted(self._view.items(Kind.SERVICE), key=lambda v: v.obj.spec.name)
        ]
        return control_pb2.ListServicesResponse(services=infos)

    @_grpc_errors
    async def GetService(self, request: control_pb2.GetServiceRequest, context: Any) -> Any:
        current = self._service(request.name)
        running = self._running_by_service().get(current.obj.id, 0)
        return control_pb2.ServiceInfo(service=current.obj, replicas_running=running)

    @_grpc_errors
    async def ListTasks(self, request: control_pb2.ListTasksRequest, context: Any) -> Any:
        tasks: Iterable[objects_pb2.Task] = self._view.objects(Kind.TASK)
        if request.service:
            self._service(request.service)
            tasks = (t for t in tasks if t.service_name == request.service)
        if not request.include_history:
            tasks = (t for t in tasks if _is_current(t))
        ordered = sorted(tasks, key=lambda t: (t.service_name, t.slot, -t.meta.created_at.seconds))
        return control_pb2.ListTasksResponse(tasks=ordered)

    @_grpc_errors
    async def GetTask(self, request: control_pb2.GetTaskRequest, context: Any) -> Any:
        return self.resolve_task(request.id)

    @_grpc_errors
    async def ListManagers(self, request: Any, context: Any) -> Any:
        managers = sorted(self._view.objects(Kind.MANAGER), key=lambda m: m.id)
        leader = (await self._leader()) if self._leader else None
        return control_pb2.ListManagersResponse(managers=managers, leader=leader or "")

    @_grpc_errors
    async def ListNodes(self, request: Any, context: Any) -> Any:
        ordered = sorted(self._view.objects(Kind.NODE), key=lambda n: n.description.hostname)
        return control_pb2.ListNodesResponse(nodes=ordered)

    @_grpc_errors
    async def GetNode(self, request: control_pb2.GetNodeRequest, context: Any) -> Any:
        return nodes.resolve(self._view, request.id).obj

    async def Logs(self, request: control_pb2.LogsRequest, context: Any) -> AsyncIterator:
        # A stream handler cannot use @_grpc_errors; errors of the broker (a node not
        # connected here) are translated the same way.
        try:
            tasks = self.resolve_log_target(request.target)
            async for entry in self._logs.stream(tasks, follow=request.follow, tail=request.tail):
                yield entry
        except OrchError as exc:
            await _abort(context, exc)

    # Resolution of names a person types.

    def resolve_task(self, ident: str) -> objects_pb2.Task:
        tasks = list(self._view.objects(Kind.TASK))
        exact = [t for t in tasks if t.id == ident]
        return _one("task", ident, exact or [t for t in tasks if t.id.startswith(ident)])

    def resolve_log_target(self, target: str) -> list[objects_pb2.Task]:
        """A service name, "service.slot", or a task id (prefix)."""
        if self._view.get(Kind.SERVICE, target):
            tasks = [t for t in self._view.objects(Kind.TASK) if t.service_name == target]
            return sorted((t for t in tasks if t.node_id), key=lambda t: t.slot)
        name, _, slot = target.rpartition(".")
        if name and slot.isdigit() and self._view.get(Kind.SERVICE, name):
            tasks = [
                t
                for t in self._view.objects(Kind.TASK)
                if t.service_name == name and t.slot == int(slot) and t.node_id
            ]
            if not tasks:
                raise NotFoundError(f"service {name} has no task in slot {slot}")
            return sorted(tasks, key=lambda t: t.meta.created_at.seconds)
        return [self.resolve_task(target)]

    def _service(self, name: str) -> Versioned:
        current = self._view.get(Kind.SERVICE, name)
        if current is None:
            raise NotFoundError(f"no such service: {name}")
        return current

    def _running_by_service(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self._view.objects(Kind.TASK):
            if t.desired_state == types_pb2.RUNNING and t.status.state == types_pb2.RUNNING:
                counts[t.service_id] = counts.get(t.service_id, 0) + 1
        return counts


def _is_current(task: objects_pb2.Task) -> bool:
    """What `orch ps` shows without --all: tasks meant to run, and ones still stopping."""
    return task.desired_state == types_pb2.RUNNING or not model.is_terminal(task.status.state)


def _one(kind: str, ident: str, matches: list) -> Any:
    if not matches:
        raise NotFoundError(f"no such {kind}: {ident}")
    if len(matches) > 1:
        raise ValidationError(f"{kind} id {ident!r} is ambiguous ({len(matches)} match)")
    return matches[0]


def _duplicates(kind: str, names: list[str]) -> list[str]:
    seen, dups = set(), []
    for name in names:
        if name in seen:
            dups.append(f"{kind} {name!r} is given more than once")
        seen.add(name)
    return dups


def _new_service(spec: specs_pb2.ServiceSpec) -> objects_pb2.Service:
    now = model.timestamp()
    meta = objects_pb2.Meta(version=1, created_at=now, updated_at=now)
    return objects_pb2.Service(id=model.new_id(), meta=meta, spec=spec)


def _normalize_service(spec: specs_pb2.ServiceSpec) -> specs_pb2.ServiceSpec:
    """A copy with the defaults of ports filled in (tcp, mode host), so a spec sent by a
    client that leaves them out is stored as the manifest loader would send it."""
    out = specs_pb2.ServiceSpec()
    out.CopyFrom(spec)
    for port in out.ports:
        port.protocol = port.protocol or "tcp"
        port.mode = port.mode or "host"
    return out
