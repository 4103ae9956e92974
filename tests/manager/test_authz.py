"""Authorization on the manager's port (manager/authz.py): the table covers every RPC, and
the interceptor, on a real grpc.aio server with mTLS, refuses what it must from the outside
(role, deny list, forwarded identity, plaintext, another CA) for all four call shapes."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

import orch.proto
from orch.errors import IdentityError, PermissionDeniedError
from orch.identity.ca import Role, cert_pem, load_certs
from orch.identity.lifecycle import DenyList
from orch.identity.peer import NodeIdentity
from orch.manager import authz
from orch.manager.authz import POLICY, Authorizer
from orch.manager.controlapi.server import ControlAPI
from orch.manager.dispatcher.server import Dispatcher
from orch.manager.state.memstore import MemoryStore
from orch.manager.state.view import ClusterView
from orch.manager.streams.logbroker import LogBroker
from orch.proto import control_pb2, control_pb2_grpc, dispatcher_pb2, dispatcher_pb2_grpc

from .mtls import OPTIONS, Cert, ClusterCA, serve


def served_services() -> list:
    """Every service the manager's mTLS port may serve: orch's own (every proto module,
    but those of the join port), and grpc health and reflection."""
    services = [
        *health_pb2.DESCRIPTOR.services_by_name.values(),
        *reflection_pb2.DESCRIPTOR.services_by_name.values(),
    ]
    for info in pkgutil.iter_modules(orch.proto.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"orch.proto.{info.name}")
            services.extend(module.DESCRIPTOR.services_by_name.values())
    return [s for s in services if s.full_name not in authz.ELSEWHERE]


def test_every_rpc_says_who_may_call_it() -> None:
    methods = {f"/{s.full_name}/{m.name}" for s in served_services() for m in s.methods}
    assert len(methods) > 20
    missing = sorted(methods - POLICY.keys())
    assert not missing, f"no entry in orch.manager.authz.POLICY for {missing}"
    # An entry of a service that is here must be one of its methods. (Entries of a service
    # not in this tree yet, id-spine's ca.proto before the merge, wait for it.)
    services = {s.full_name for s in served_services()}
    stale = sorted(m for m in POLICY.keys() - methods if m.split("/")[1] in services)
    assert not stale, f"POLICY names methods no service has: {stale}"
    assert all(POLICY[m] for m in methods)  # an empty entry would be a method no one calls


def test_agents_reach_only_the_dispatcher_and_admins_only_the_control_api() -> None:
    for method, roles in POLICY.items():
        if method.startswith(f"/{authz.CONTROL}/"):
            assert roles == {Role.ADMIN, Role.MANAGER}, method
        if method.startswith(f"/{authz.DISPATCHER}/"):
            assert roles == {Role.WORKER, Role.MANAGER}, method


# The decision, over the auth context grpc gives a handler.


def auth(cert: Cert) -> dict[str, list[bytes]]:
    leaf = cert_pem(load_certs(cert.chain_pem, what="test")[0])
    return {"transport_security_type": [b"ssl"], "x509_pem_cert": [leaf]}


APPLY = f"/{authz.CONTROL}/Apply"


def test_the_role_decides_and_the_refusal_says_so() -> None:
    ca = ClusterCA()
    authorizer = Authorizer(ca.cluster_id, DenyList())
    admin = ca.issue(Role.ADMIN)
    assert authorizer.authorize(APPLY, auth(admin), ()).node_id == admin.node_id
    with pytest.raises(PermissionDeniedError) as err:
        authorizer.authorize(APPLY, auth(ca.issue(Role.WORKER)), ())
    assert str(err.value) == (f"an agent (worker) certificate may not call {authz.CONTROL}/Apply")
    with pytest.raises(PermissionDeniedError, match="is not open to any caller"):
        authorizer.authorize("/orch.v1.Control/Unlisted", auth(admin), ())


def test_a_manager_speaks_for_its_caller_and_no_one_else_may() -> None:
    ca = ClusterCA()
    authorizer = Authorizer(ca.cluster_id, DenyList())
    manager, worker, admin = (ca.issue(r) for r in (Role.MANAGER, Role.WORKER, Role.ADMIN))
    original = NodeIdentity(admin.node_id, Role.ADMIN, ca.cluster_id, 0xABC, _NOT_AFTER)
    forwarded = authz.on_behalf_of(original)
    assert authorizer.authorize(APPLY, auth(manager), forwarded) == original
    # The original caller's role is what is authorized.
    as_worker = authz.on_behalf_of(
        NodeIdentity(worker.node_id, Role.WORKER, ca.cluster_id, 1, _NOT_AFTER)
    )
    with pytest.raises(PermissionDeniedError) as err:
        authorizer.authorize(APPLY, auth(manager), as_worker)
    assert str(err.value) == (
        f"an agent (worker) certificate may not call {authz.CONTROL}/Apply "
        f"(forwarded by manager {manager.node_id})"
    )
    # Only a manager's certificate may carry it.
    for peer in (worker, admin):
        with pytest.raises(PermissionDeniedError, match="may not call on behalf of"):
            authorizer.authorize(APPLY, auth(peer), forwarded)
    # The forwarded caller is checked against the deny list too.
    denying = Authorizer(ca.cluster_id, DenyList().deny_nodes([admin.node_id]))
    with pytest.raises(PermissionDeniedError, match=f"node {admin.node_id} was removed"):
        denying.authorize(APPLY, auth(manager), forwarded)
    for bad in ("admin nope 1 2", "root " + admin.node_id + " 1 2", "x" * 500, "admin"):
        with pytest.raises(IdentityError, match="orch-on-behalf-of is malformed"):
            authorizer.authorize(APPLY, auth(manager), ((authz.ON_BEHALF_OF, bad),))


_NOT_AFTER = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_remembered_certificate_is_still_checked_against_the_deny_list() -> None:
    ca = ClusterCA()

    class Changing:
        deny = DenyList()

        def check(self, identity: NodeIdentity) -> NodeIdentity:
            return self.deny.check(identity)

    source = Changing()
    authorizer = Authorizer(ca.cluster_id, source)
    worker = ca.issue(Role.WORKER)
    session = f"/{authz.DISPATCHER}/Session"
    assert authorizer.authorize(session, auth(worker), ()).node_id == worker.node_id
    source.deny = DenyList().deny_nodes([worker.node_id])
    with pytest.raises(PermissionDeniedError, match="was removed from the cluster"):
        authorizer.authorize(session, auth(worker), ())
    # Another cluster's certificate is refused every time (a failure is not remembered).
    stranger = ClusterCA().issue(Role.ADMIN)
    for _ in range(2):
        with pytest.raises(IdentityError, match="not of this cluster"):
            authorizer.authorize(APPLY, auth(stranger), ())


def test_a_handler_without_the_interceptor_has_no_caller() -> None:
    with pytest.raises(IdentityError, match="without its authorization interceptor"):
        authz.caller(None)


# From the outside, on a real mTLS server.


@pytest.fixture
async def manager(memstore: MemoryStore) -> AsyncIterator[tuple[ClusterCA, str, ClusterCA]]:
    """A manager's port: Control, Dispatcher, health and reflection behind the
    interceptor; a removed node (``DENIED``) on its deny list. Yields its CA, its
    address and another cluster's CA."""
    ca = ClusterCA()
    view = ClusterView(memstore)
    logs = LogBroker()

    def add(server: grpc.aio.Server) -> None:
        control_pb2_grpc.add_ControlServicer_to_server(
            ControlAPI(store=memstore, view=view, logs=logs), server
        )
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(
            Dispatcher(store=memstore, view=view, logs=logs, manager_id="m1"), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        reflection.enable_server_reflection([authz.CONTROL, reflection.SERVICE_NAME], server)

    async with serve(ca, add, deny=DenyList().deny_nodes([DENIED])) as (_, address):
        yield ca, address, ClusterCA()


DENIED = "d" * 25


async def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code()


async def drain(stream) -> list:
    return [item async for item in stream]


async def test_an_agent_certificate_on_the_control_api_is_refused(manager) -> None:
    ca, address, _ = manager
    async with ca.channel(address, ca.issue(Role.WORKER)) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Apply(control_pb2.ApplyRequest())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == (
            "an agent (worker) certificate may not call orch.v1.Control/Apply"
        )
        # unary-stream, too
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await drain(stub.Logs(control_pb2.LogsRequest(target="web")))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_admin_certificate_is_refused_on_the_dispatcher(manager) -> None:
    ca, address, _ = manager
    async with ca.channel(address, ca.issue(Role.ADMIN)) as channel:
        stub = dispatcher_pb2_grpc.DispatcherStub(channel)
        # stream-stream
        session = stub.Session()
        await session.write(dispatcher_pb2.AgentMessage(register=dispatcher_pb2.Register()))
        assert await code_of(session.read()) == grpc.StatusCode.PERMISSION_DENIED

        # stream-unary
        async def nothing():
            yield dispatcher_pb2.PublishLogsMessage()

        assert await code_of(stub.PublishLogs(nothing())) == grpc.StatusCode.PERMISSION_DENIED
        # but the Control API is its own
        control = control_pb2_grpc.ControlStub(channel)
        assert (await control.ListServices(control_pb2.ListServicesRequest())).services == []


async def test_a_removed_node_is_refused_on_every_call(manager) -> None:
    ca, address, _ = manager
    async with ca.channel(address, ca.issue(Role.WORKER, DENIED)) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"node {DENIED} was removed from the cluster" in err.value.details()


async def test_any_verified_identity_reaches_health_and_reflection(manager) -> None:
    ca, address, _ = manager
    for role in Role:
        async with ca.channel(address, ca.issue(role)) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)

            async def ask():
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            [listing] = await drain(stub.ServerReflectionInfo(ask()))
            assert authz.CONTROL in {s.name for s in listing.list_services_response.service}


async def test_a_plaintext_client_and_a_certificate_of_another_ca_fail(manager) -> None:
    ca, address, other = manager
    request = control_pb2.VersionRequest()
    async with grpc.aio.insecure_channel(address) as plain:
        stub = control_pb2_grpc.ControlStub(plain)
        assert await code_of(stub.Version(request, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    # Another cluster's admin, trusting this cluster's root: its certificate does not
    # verify, the handshake fails before any call.
    stranger = other.issue(Role.ADMIN)
    creds = grpc.ssl_channel_credentials(ca.roots, stranger.key_pem, stranger.chain_pem)
    async with grpc.aio.secure_channel(address, creds, options=OPTIONS) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        assert await code_of(stub.Version(request, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    # No client certificate at all: also refused by the handshake.
    async with ca.channel(address, None) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        assert await code_of(stub.Version(request, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    # The same call with this cluster's admin certificate is answered.
    async with ca.channel(address, ca.issue(Role.ADMIN)) as channel:
        assert (await control_pb2_grpc.ControlStub(channel).Version(request)).version
