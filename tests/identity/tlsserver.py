"""A tiny grpc.aio server that answers with the caller's identity: what the Dispatcher
and the Control API will do (ssl_server_credentials with require_client_auth, identity
from ``context.auth_context()`` only), with a generic handler so no proto is needed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import grpc
import pytest

from orch.errors import IdentityError
from orch.identity.errors import CertificateDeniedError
from orch.identity.lifecycle import DenyList
from orch.identity.peer import identity_from_auth_context

from .pki import Issued

SERVICE = "orch.test.Whoami"
METHOD = f"/{SERVICE}/Who"
MANAGER_NAME = "orch-manager"  # every manager certificate's SAN; peers check against it


class Whoami:
    """Answers with the caller's identity, or refuses the way the real servers will."""

    def __init__(self, cluster_id: str, deny: DenyList | None = None) -> None:
        self.cluster_id = cluster_id
        self.deny = deny or DenyList()

    async def who(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            identity = identity_from_auth_context(
                context.auth_context(), cluster_id=self.cluster_id
            )
            self.deny.check(identity)
        except CertificateDeniedError as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except IdentityError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        return json.dumps(
            {
                "node_id": identity.node_id,
                "role": identity.role.value,
                "cluster": identity.cluster_id,
            }
        ).encode()


@contextlib.asynccontextmanager
async def serve(credentials: grpc.ServerCredentials, whoami: Whoami) -> AsyncIterator[int]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Who": grpc.unary_unary_rpc_method_handler(whoami.who)}
    )
    server.add_generic_rpc_handlers([handler])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


def mtls_server(server: Issued, roots: bytes) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(server.key_pem, server.chain_pem)], root_certificates=roots, require_client_auth=True
    )


def client_creds(roots: bytes, client: Issued | None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.ssl_channel_credentials(roots, client.key_pem, client.chain_pem)


async def who(port: int, credentials: grpc.ChannelCredentials | None) -> dict:
    # A local subchannel pool: every call here makes its own connection and handshake,
    # never one left by an earlier call with other credentials.
    options = [
        ("grpc.ssl_target_name_override", MANAGER_NAME),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target, options=options)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials, options=options)
    )
    async with channel:
        return json.loads(await channel.unary_unary(METHOD)(b"", timeout=10))


async def refused(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await who(port, credentials)
    return err.value.code()
