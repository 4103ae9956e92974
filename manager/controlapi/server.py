"""The Control API: what `orch` calls. Every manager serves it, leader or not.

Reads come from the manager's ClusterView. Writes validate everything first, then go to
etcd in ONE guarded transaction, so a bad request or a lost race changes nothing; after a
write the handler waits until its own view has the new revision, so the next call from
the same client sees it. A write that loses a race is decided again over the newer view a
few times (concurrent applies creating networks race for VNIs and subnets). What to write
is decided by pure functions of the view, one module per resource: apply.py (with
services.py and networks.py), services.py, networks.py, nodes.py; tasks.py resolves the
names a person types. This module only validates, decides, commits, waits for its view and
answers. A dry-run Apply commits nothing: its decision runs through the leader's loops
on a copy of the cluster (simulator.py), which tells the tasks it would start and stop.
Errors leave here as gRPC status codes (grpcerrors.py) with a message meant for a person
(INVALID_ARGUMENT carries one problem per line, FAILED_PRECONDITION says who still uses
what is to be removed).

When etcd fails (no quorum, no member reachable) a write fails within the Store's timeout
(5 s) with UNAVAILABLE, a one-line message that says so, and the trailing metadata
``orch-error: store-unavailable``: every manager shares that etcd, so the CLI does not try
the next manager, it reports. Reads answer from the view meanwhile (the state as of the
outage, which no one can change then); ListManagers leaves the leader blank.

Logs and Exec reach containers through the agents' sessions; forwarding.py serves them
from any manager (the call goes on to the manager holding the node's session).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from orch import grpcerrors
from orch.errors import ConflictError, OrchError, StoreError, ValidationError
from orch.identity.ca import NODE_VALIDITY
from orch.manager import authz, simulator
from orch.manager.allocator.ipam import IpamSettings
from orch.manager.controlapi import apply, networks, nodes, services, tasks
from orch.manager.controlapi.decision import Decision, View
from orch.manager.state.api import Kind, Store
from orch.manager.state.view import ClusterView
from orch.manager.streams.execbroker import ExecBroker
from orch.manager.streams.forwarding import SessionRouter
from orch.manager.streams.logbroker import LogBroker
from orch.manager.streams.sessionroutes import exec_task
from orch.proto import control_pb2, control_pb2_grpc
from orch.version import version

log = logging.getLogger(__name__)


def _grpc_errors(handler: Callable) -> Callable:
    """Translate orch errors into gRPC status codes with a readable message (grpcerrors)."""

    async def wrapper(self: ControlAPI, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except OrchError as exc:
            await grpcerrors.abort(context, exc)

    wrapper.__name__ = handler.__name__
    return wrapper


@dataclass(frozen=True)
class ControlSettings:
    """Tunables of the Control API."""

    ipam: IpamSettings = dataclasses.field(default_factory=IpamSettings)
    """Where new networks get their subnet and VNI."""
    reserved_ports: tuple[int, ...] = (22, 53, 2379, 2380)
    """Host ports no service may publish, on any protocol, besides the port each manager
    serves on (known from its presence record): ssh, DNS (the agents' resolvers), etcd's
    client and peer ports; the manager adds the ports of its --etcd endpoints. A
    published port is a DNAT on the node's address, so it would capture these."""
    apply_attempts: int = 8
    """Times a write (apply, scale, removal, node update) decides again after its
    transaction lost a race (another Apply created a network meanwhile, the dispatcher
    refreshed the node's status, this manager's view trailed a write made through another
    manager); each lost race means another writer made progress."""
    catch_up_timeout: float = 1.0
    """Seconds a write waits for this manager's view to reach etcd's current revision
    before it decides (see ``_catch_up``)."""
    deny_for: timedelta = NODE_VALIDITY + timedelta(minutes=10)
    """How long a removed node stays on the deny list: the longest life of a certificate
    issued before its removal (the node certificates' validity), plus clock skew between
    managers. Set it to the cluster's node certificate validity when that is not the
    default."""
    sim: simulator.SimulatorSettings = dataclasses.field(
        default_factory=simulator.SimulatorSettings
    )
    """How a dry run simulates the leader's loops (its orchestrator settings should be
    the leader's)."""


def _now() -> datetime:
    return datetime.now(UTC)


class ControlAPI(control_pb2_grpc.ControlServicer):
    def __init__(
        self,
        *,
        store: Store,
        view: ClusterView,
        logs: LogBroker,
        settings: ControlSettings | None = None,
        leader: Callable[[], Awaitable[str | None]] | None = None,
        router: SessionRouter | None = None,
    ) -> None:
        self._store = store
        self._leader = leader
        self._view = view
        self._logs = logs
        self._settings = settings or ControlSettings()
        # Logs and exec of nodes connected to another manager go through that manager.
        self._router = router or SessionRouter(
            view=view, logs=logs, execs=ExecBroker(), manager_id=""
        )

    # Writes: validate the request, decide over the view, commit, answer.

    @_grpc_errors
    async def Apply(self, request: control_pb2.ApplyRequest, context: Any) -> Any:
        nets, specs = apply.validated(request)
        ipam = self._settings.ipam

        def decide(view: View) -> Decision:
            return apply.decide(view, nets, specs, ipam, _now(), self._settings.reserved_ports)

        decision = await self._commit(decide, dry_run=request.dry_run)
        response = control_pb2.ApplyResponse(changes=decision.changes)
        if request.dry_run:  # the same decision, run through the leader's loops on a copy
            plan = await simulator.dry_run(self._view, decide, _now(), self._settings.sim)
            response.planned_tasks.extend(plan.tasks)
            response.plan_note = plan.note
        return response

    @_grpc_errors
    async def Scale(self, request: control_pb2.ScaleRequest, context: Any) -> Any:
        services.check_scale(request)
        decision = await self._commit(lambda view: services.decide_scale(view, request, _now()))
        return control_pb2.ScaleResponse(changes=decision.changes)

    @_grpc_errors
    async def Rollback(self, request: control_pb2.RollbackRequest, context: Any) -> Any:
        await self._commit(
            lambda view: services.decide_rollback(
                view, request.name, _now(), self._settings.reserved_ports
            )
        )
        return services.info(self._view, services.get(self._view, request.name).obj, _now())

    @_grpc_errors
    async def RemoveService(self, request: control_pb2.RemoveServiceRequest, context: Any) -> Any:
        await self._commit(lambda view: services.decide_removal(view, request.name))
        return control_pb2.RemoveServiceResponse()

    @_grpc_errors
    async def RemoveNetwork(self, request: control_pb2.RemoveNetworkRequest, context: Any) -> Any:
        await self._commit(lambda view: networks.decide_removal(view, request.name))
        return control_pb2.RemoveNetworkResponse()

    @_grpc_errors
    async def UpdateNode(self, request: control_pb2.UpdateNodeRequest, context: Any) -> Any:
        nodes.check_update(request)
        decision = await self._commit(lambda view: nodes.decide_update(view, request, _now()))
        return decision.result

    @_grpc_errors
    async def RemoveNode(self, request: control_pb2.RemoveNodeRequest, context: Any) -> Any:
        # The deny-list entry is written with the delete, on a lease of its own that ends
        # when the node's last certificate has expired (nodes.py).
        deny_for = self._settings.deny_for
        lease = await self._store.grant_lease(math.ceil(deny_for.total_seconds()))
        try:
            await self._commit(
                lambda view: nodes.decide_removal(
                    view, request, now=_now(), deny_for=deny_for, lease=lease
                )
            )
        except Exception:
            with contextlib.suppress(OrchError):  # else it just ends with its TTL
                await self._store.revoke_lease(lease)
            raise
        return control_pb2.RemoveNodeResponse()

    async def _commit(
        self, decide: Callable[[View], Decision], *, dry_run: bool = False
    ) -> Decision:
        """Commit what ``decide`` (a pure function of the view) returns; when the
        transaction loses a race, catch up with etcd and decide again, a few times.
        Returns the decision that landed once the view holds it (with ``dry_run``, the
        decision, unwritten).

        First the view catches up with etcd: it may trail a write just made through
        another manager (scale through one, then through the other), which must be seen
        before deciding; one etcd read, the price of linearizable writes."""
        await self._catch_up()
        attempt = 1
        while True:
            decision = decide(self._view)
            if dry_run or not decision.ops:
                return decision
            try:
                revision = await self._store.commit(decision.ops)
                break
            except ConflictError:
                if attempt >= self._settings.apply_attempts:
                    raise
            attempt += 1
            await self._catch_up()
        await self._view.wait_for(revision)
        return decision

    async def _catch_up(self) -> None:
        """Wait until the view has etcd's current revision, for at most
        ``catch_up_timeout``. The view only learns revisions of keys under orch's prefix;
        should anything else write to this etcd, the wait ends at the bound and the
        decision goes ahead on the view as it is (its guarded txn still catches a stale
        read), instead of stalling every write."""
        revision = await self._store.revision()
        with contextlib.suppress(TimeoutError):
            await self._view.wait_for(revision, timeout=self._settings.catch_up_timeout)

    # Reads, from the view.

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
        now = _now()
        infos = [
            services.info(self._view, v.obj, now)
            for v in sorted(self._view.items(Kind.SERVICE), key=lambda v: v.obj.spec.name)
        ]
        return control_pb2.ListServicesResponse(services=infos)

    @_grpc_errors
    async def GetService(self, request: control_pb2.GetServiceRequest, context: Any) -> Any:
        return services.info(self._view, services.get(self._view, request.name).obj, _now())

    @_grpc_errors
    async def ListTasks(self, request: control_pb2.ListTasksRequest, context: Any) -> Any:
        return control_pb2.ListTasksResponse(tasks=tasks.listing(self._view, request))

    @_grpc_errors
    async def GetTask(self, request: control_pb2.GetTaskRequest, context: Any) -> Any:
        return tasks.resolve(self._view, request.id)

    @_grpc_errors
    async def ListManagers(self, request: Any, context: Any) -> Any:
        managers = sorted(self._view.objects(Kind.MANAGER), key=lambda m: m.id)
        try:
            leader = (await self._leader()) if self._leader else None
        except StoreError as exc:  # etcd cannot tell who leads: list them all the same
            log.warning("ListManagers: no leader known: %s", exc)
            leader = None
        return control_pb2.ListManagersResponse(managers=managers, leader=leader or "")

    @_grpc_errors
    async def Version(self, request: Any, context: Any) -> Any:
        return control_pb2.VersionResponse(version=version())

    @_grpc_errors
    async def ListNodes(self, request: Any, context: Any) -> Any:
        ordered = sorted(self._view.objects(Kind.NODE), key=lambda n: n.description.hostname)
        return control_pb2.ListNodesResponse(nodes=ordered)

    @_grpc_errors
    async def GetNode(self, request: control_pb2.GetNodeRequest, context: Any) -> Any:
        return nodes.resolve(self._view, request.id).obj

    # Streams: resolved here, served by the session router (forwarding.py).

    async def Logs(self, request: control_pb2.LogsRequest, context: Any) -> AsyncIterator:
        # A stream handler cannot use @_grpc_errors; errors of the broker (a node not
        # connected here) are translated the same way.
        try:
            if request.task_ids:  # forwarded by another manager: served from sessions here
                entries = self._router.forwarded_logs(request)
            else:
                targets = tasks.log_targets(self._view, request.target)
                entries = self._router.logs(
                    targets,
                    follow=request.follow,
                    tail=request.tail,
                    caller=authz.caller(context),  # the next manager authorizes it too
                )
            async for entry in entries:
                yield entry
        except OrchError as exc:
            await grpcerrors.abort(context, exc)

    async def Exec(self, request: control_pb2.ExecRequest, context: Any) -> AsyncIterator:
        try:
            if not request.argv or not request.argv[0]:
                raise ValidationError("exec: no command given")
            if request.task_id:  # forwarded by another manager: served from sessions here
                outputs = self._router.forwarded_exec(request)
            else:
                names = {v.obj.spec.name for v in self._view.items(Kind.SERVICE)}
                task = exec_task(
                    request.target, services=names, tasks=list(self._view.objects(Kind.TASK))
                )
                outputs = self._router.exec(task, request.argv, request.env, authz.caller(context))
            async for out in outputs:
                yield out
        except OrchError as exc:
            await grpcerrors.abort(context, exc)
