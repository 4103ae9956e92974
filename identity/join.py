"""Joining a cluster, the node's side: fetch the roots from a manager's join port, keep
the one the token pins, send a CSR with a proof of the token's secret, check the answer.

The join port is plaintext (a joiner has no certificate yet, and Python grpc can neither
ask for an optional client certificate nor show an unverified chain), so nothing that
comes back is trusted on its face: the root must match the token's digest
(``pin_root_ca``), and the certificate must verify up to that root and be for the key
made here. The token's secret never travels: the request carries
HMAC-SHA256(secret, CSR DER), which is worth nothing for any other key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from cryptography.hazmat.primitives import serialization

from orch import grpcerrors
from orch.errors import IdentityError
from orch.identity.ca import create_csr, csr_pem, load_certs, new_private_key
from orch.identity.errors import CAPinMismatchError
from orch.identity.material import NodeMaterial
from orch.identity.peer import NodeIdentity, verify_chain
from orch.identity.tokens import join_proof, parse_join_token, pin_root_ca
from orch.proto import ca_pb2, ca_pb2_grpc

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 10.0
"""Seconds each join call may take."""


def join_address_for(manager_address: str) -> str:
    """The join port orch assumes beside a manager address: the same host, the mTLS port
    plus one (what ``orch-manager`` listens on unless ``--join-listen`` says otherwise)."""
    host, sep, port = manager_address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65535:
        raise IdentityError(f"manager address {manager_address!r} is not HOST:PORT")
    return f"{host}:{int(port) + 1}"


async def join(
    addresses: Sequence[str], token_text: str, *, timeout: float = JOIN_TIMEOUT
) -> tuple[NodeMaterial, NodeIdentity]:
    """Join through the first join port that answers; the material to save and the
    identity the certificate names. A refusal (bad token, pin mismatch) is final and
    raised at once; an unreachable address moves on to the next."""
    token = parse_join_token(token_text)
    failures: list[str] = []
    for address in addresses:
        try:
            return await _join_at(address, token, timeout)
        except grpc.aio.AioRpcError as exc:
            known = grpcerrors.error_of(exc)
            if known is not None:
                raise known from exc
            failures.append(f"{address} ({exc.code().name.lower()}: {exc.details()})")
            log.warning("join through %s: %s", address, exc.details() or exc.code().name)
    raise IdentityError("cannot join: no manager's join port answered: " + ", ".join(failures))


async def _join_at(address: str, token, timeout: float) -> tuple[NodeMaterial, NodeIdentity]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ca_pb2_grpc.NodeCAStub(channel)
        served = await stub.GetRootCA(ca_pb2.GetRootCARequest(), timeout=timeout)
        root = pin_root_ca(served.roots_pem, token, source=f"the manager at {address}")
        key = new_private_key()
        csr = create_csr(key)
        proof = join_proof(token.secret, csr.public_bytes(serialization.Encoding.DER))
        answer = await stub.Join(
            ca_pb2.JoinRequest(token_digest=token.ca_digest, csr_pem=csr_pem(csr), proof=proof),
            timeout=timeout,
        )
    chain = load_certs(answer.chain_pem, what=f"the certificate sent by {address}")
    try:
        identity = verify_chain(chain, [root], cluster_id=None)
    except IdentityError as exc:
        raise CAPinMismatchError(
            f"the certificate sent by {address} does not verify against the root the join "
            f"token pins ({exc}): refusing it; this is a man in the middle"
        ) from exc
    if chain[0].public_key() != key.public_key():
        raise CAPinMismatchError(
            f"the certificate sent by {address} is for another key than this node's: "
            "refusing it; this is a man in the middle"
        )
    return NodeMaterial(key, tuple(chain), (root,)), identity
