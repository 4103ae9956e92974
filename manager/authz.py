"""Who may call what on the manager's mTLS port, enforced before any handler runs.

The TLS handshake (``require_client_auth``) has verified the peer's chain; this module
decides, on every call, whether that peer may make it:

1. Identity: only from the verified certificate (``identity_from_auth_context``); a peer
   without one, of another cluster, or with a malformed name gets UNAUTHENTICATED.
2. Deny list: a removed node's certificate keeps verifying until it expires, so the deny
   list is checked on every call (PERMISSION_DENIED). It is read from the ClusterView,
   which a watch keeps current (``StoreDenyList``).
3. Forwarding: a manager passing a call on for its own caller (forwarding.py) says so in
   the metadata ``orch-on-behalf-of``; it is honoured only from a manager certificate, and
   then the *original* caller is what gets authorized (and checked against the deny list).
4. Role: ``POLICY``, ONE table naming who may call every method served here. A method
   missing from it is refused to everyone (a new RPC fails closed until it says who may
   call it; tests/manager/test_authz.py walks every service descriptor to catch that).

Handlers read who is calling with ``caller(context)``; there is no other way, so a handler
never looks at a request field to learn it (the Dispatcher's node id, for instance).

Wire it where the server is built (manager/main.py)::

    server = grpc.aio.server(
        interceptors=authz.server_interceptors(cluster_id, authz.StoreDenyList(view))
    )
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from orch.errors import IdentityError, PermissionDeniedError
from orch.identity.ca import Role, is_id
from orch.identity.errors import CertificateDeniedError
from orch.identity.peer import NodeIdentity, identity_from_auth_context
from orch.manager.state.api import Kind
from orch.proto import control_pb2, dispatcher_pb2

ON_BEHALF_OF = "orch-on-behalf-of"
"""Metadata a manager adds to a call it forwards: the caller it forwards for,
``<role> <node id> <serial hex> <not_after unix seconds>``."""
_ON_BEHALF_OF_MAX = 128  # role + 25 + 40 + 12 and spaces fit; anything longer is refused

CONTROL = control_pb2.DESCRIPTOR.services_by_name["Control"].full_name
DISPATCHER = dispatcher_pb2.DESCRIPTOR.services_by_name["Dispatcher"].full_name
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name

OPERATORS = frozenset({Role.ADMIN, Role.MANAGER})
"""The CLI (admin), and managers forwarding logs and exec for it (forwarding.py)."""
NODES = frozenset({Role.WORKER, Role.MANAGER})
"""Agents; a manager's certificate may hold a session too (a manager node's agent)."""
ADMINS = frozenset({Role.ADMIN})
"""The CLI only: what makes new members of the cluster (join tokens, admin certificates)."""
ANYONE = frozenset(Role)
"""Any verified identity of this cluster."""


def _each(service: str, roles: frozenset[Role], *methods: str) -> dict[str, frozenset[Role]]:
    return {f"/{service}/{m}": roles for m in methods}


POLICY: Mapping[str, frozenset[Role]] = {
    **_each(
        CONTROL,
        OPERATORS,
        # writes
        "Apply",
        "Scale",
        "Rollback",
        "RemoveService",
        "RemoveNetwork",
        "UpdateNode",
        "RemoveNode",
        # reads
        "ListServices",
        "GetService",
        "ListTasks",
        "GetTask",
        "ListNodes",
        "GetNode",
        "ListManagers",
        "ListNetworks",
        "GetNetwork",
        "Version",
        # streams into containers, through the agents' sessions
        "Logs",
        "Exec",
    ),
    # What a node may do inside its session (its own tasks only) is the Dispatcher's.
    **_each(DISPATCHER, NODES, "Session", "PublishLogs", "PublishExec"),
    **_each(HEALTH, ANYONE, "Check", "List", "Watch"),
    **_each(REFLECTION, ANYONE, "ServerReflectionInfo"),
    # proto/ca.proto (branch id-spine): renewal, any verified node for its own certificate;
    # the CA's administration (join tokens, admin certificates), admins only.
    **_each("orch.v1.NodeCertificates", ANYONE, "Renew"),
    **_each("orch.v1.ClusterCA", ADMINS, "JoinToken", "IssueAdmin"),
}
"""Full method name -> the roles that may call it. Every method served on the mTLS port
has an entry; services of the plaintext join port (``ELSEWHERE``) are not behind it."""

ELSEWHERE = frozenset({"orch.v1.NodeCA"})
"""Services never served on the mTLS port: NodeCA (GetRootCA, Join) is on the join port,
for nodes that have no certificate yet (id-spine's ca.proto)."""


class DenySource(Protocol):
    """Where the deny list comes from: ``check`` returns the identity if it may call,
    else raises CertificateDeniedError naming why. ``orch.identity.DenyList`` is one (a
    fixed list); ``StoreDenyList`` reads the store's."""

    def check(self, identity: NodeIdentity) -> NodeIdentity: ...


class StoreDenyList:
    """The deny list as the store holds it (``Kind.DENIED``, written by `orch node rm`),
    read from a ClusterView: a watch keeps it current, so a removal is refused on the
    next call to any manager, with no polling. Entries expire with their etcd lease."""

    def __init__(self, view: Any) -> None:
        self._view = view

    def check(self, identity: NodeIdentity) -> NodeIdentity:
        if self._view.get(Kind.DENIED, identity.node_id) is not None:
            raise CertificateDeniedError(
                f"node {identity.node_id} was removed from the cluster: its certificate is "
                "refused; join again with a token to come back as a new node"
            )
        return identity


_CALLER: contextvars.ContextVar[NodeIdentity] = contextvars.ContextVar("orch_caller")


def caller(context: Any) -> NodeIdentity:
    """Who is making this call, as the interceptor authorized it (for a forwarded call:
    the original caller). ``context`` is the call's; the identity travels with the call's
    task (and the tasks it starts), so it is the one of this call. Raises IdentityError
    when no interceptor ran: a handler fails closed rather than trust anything else."""
    del context  # the call's identity is in its task's context (grpc keeps no attributes)
    try:
        return _CALLER.get()
    except LookupError:
        raise IdentityError(
            "no verified caller: the manager serves without its authorization interceptor"
        ) from None


def on_behalf_of(identity: NodeIdentity) -> tuple[tuple[str, str], ...]:
    """The metadata of a call a manager forwards for ``identity``."""
    stamp = int(identity.not_after.timestamp())
    return ((ON_BEHALF_OF, f"{identity.role} {identity.node_id} {identity.serial:x} {stamp}"),)


def _parse_on_behalf_of(text: str, *, cluster_id: str) -> NodeIdentity:
    parts = text.split(" ") if len(text) <= _ON_BEHALF_OF_MAX else []
    if len(parts) == 4 and is_id(parts[1]) and parts[0] in set(Role):
        role, node_id, serial, stamp = parts
        with contextlib.suppress(ValueError, OverflowError, OSError):
            if len(serial) <= 40 and stamp.isdigit():
                not_after = datetime.fromtimestamp(int(stamp), UTC)
                return NodeIdentity(node_id, Role(role), cluster_id, int(serial, 16), not_after)
    raise IdentityError(
        f"metadata {ON_BEHALF_OF} is malformed: expected '<role> <node id> <serial hex> "
        "<not_after seconds>'"
    )


_IDENTITY_KEYS = ("transport_security_type", "x509_pem_cert", "x509_common_name")
_IDENTITY_CACHE = 4096  # certificates remembered; more (a cluster that large) start over


def describe(role: Role) -> str:
    """How a refusal names a certificate's role."""
    return {
        Role.ADMIN: "an admin",
        Role.MANAGER: "a manager",
        Role.WORKER: "an agent (worker)",
    }[role]


class Authorizer:
    """The decision for one call, from the peer's auth context and the call's metadata.
    Raises IdentityError (UNAUTHENTICATED) or PermissionDeniedError (PERMISSION_DENIED)
    with one line saying why; returns the identity the handler acts for."""

    def __init__(
        self, cluster_id: str, deny: DenySource, policy: Mapping[str, frozenset[Role]] = POLICY
    ) -> None:
        self.cluster_id = cluster_id
        self.deny = deny
        self.policy = policy
        # Parsing the peer's certificate costs ~150 us, on every call of every agent:
        # what a verified certificate names never changes, so it is read once.
        self._identities: dict[tuple, NodeIdentity] = {}

    def identity(self, auth_context: Mapping[str, Any]) -> NodeIdentity:
        """The peer's identity (``identity_from_auth_context``), remembered per
        certificate; a failure is not remembered."""
        key = tuple(tuple(auth_context.get(k) or ()) for k in _IDENTITY_KEYS)
        found = self._identities.get(key)
        if found is None:
            found = identity_from_auth_context(auth_context, cluster_id=self.cluster_id)
            if len(self._identities) >= _IDENTITY_CACHE:
                self._identities.clear()
            self._identities[key] = found
        return found

    def authorize(
        self,
        method: str,
        auth_context: Mapping[str, Any],
        metadata: Sequence[tuple[str, Any]] | None,
    ) -> NodeIdentity:
        peer = self.deny.check(self.identity(auth_context))
        who = peer
        forwarded = [v for k, v in metadata or () if k == ON_BEHALF_OF]
        if forwarded:
            if peer.role != Role.MANAGER or len(forwarded) != 1:
                raise PermissionDeniedError(
                    f"{describe(peer.role)} certificate may not call on behalf of another "
                    f"caller ({ON_BEHALF_OF}); only a manager forwards calls, once"
                )
            value = forwarded[0]
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            who = self.deny.check(_parse_on_behalf_of(text, cluster_id=self.cluster_id))
        allowed = self.policy.get(method)
        name = method.lstrip("/")
        if allowed is None:
            raise PermissionDeniedError(f"{name} is not open to any caller")
        if who.role not in allowed:
            via = f" (forwarded by manager {peer.node_id})" if who is not peer else ""
            raise PermissionDeniedError(
                f"{describe(who.role)} certificate may not call {name}{via}"
            )
        return who


class AuthzInterceptor(grpc.aio.ServerInterceptor):
    """Runs ``Authorizer.authorize`` before every call's handler, whatever its shape
    (unary or streaming on either side), and makes the result ``caller(context)``."""

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    async def intercept_service(
        self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED, nothing runs
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata

        async def admit(context: grpc.aio.ServicerContext) -> None:
            try:
                who = self._authorizer.authorize(method, context.auth_context(), metadata)
            except PermissionDeniedError as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            except IdentityError as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            _CALLER.set(who)

        return _guarded(handler, admit)


def server_interceptors(cluster_id: str, deny: DenySource) -> list[grpc.aio.ServerInterceptor]:
    """What the manager's mTLS server is built with: ``grpc.aio.server(interceptors=...)``.
    ``deny``: ``StoreDenyList(view)`` in a manager."""
    return [AuthzInterceptor(Authorizer(cluster_id, deny))]


Admit = Callable[[grpc.aio.ServicerContext], Any]


def _guarded(handler: grpc.RpcMethodHandler, admit: Admit) -> grpc.RpcMethodHandler:
    """``handler`` with ``admit`` run first in each of its behaviours."""
    args = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_single(handler.unary_unary, admit), *args)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_single(handler.stream_unary, admit), *args)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_streamed(handler.unary_stream, admit), *args)
    return grpc.stream_stream_rpc_method_handler(_streamed(handler.stream_stream, admit), *args)


def _single(behavior: Callable, admit: Admit) -> Callable:
    """A behaviour answering one response (its request may be a stream)."""

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await admit(context)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return guarded


def _streamed(behavior: Callable, admit: Admit) -> Callable:
    """A behaviour answering a stream: an async generator, or a coroutine that writes
    with ``context.write`` (grpc tells them apart by the function's kind, so the guard
    keeps it)."""
    if inspect.isasyncgenfunction(behavior):

        async def guarded_gen(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            # aclosing: when the call ends early, the handler's own cleanup runs now, not
            # when the garbage collector finds its generator.
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response

        return guarded_gen
    return _single(behavior, admit)
