"""A whole join, renewal and removal, composed from the pure core the way the next
increment wires it: node side and CA side in one test, the grpc server at the end."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from orch.errors import IdentityError
from orch.identity import (
    DenyList,
    Role,
    create_csr,
    create_root_ca,
    issue_certificate,
    load_node_material,
    new_id,
    new_join_tokens,
    new_private_key,
    parse_join_token,
    pin_root_ca,
    renew_certificate,
    role_for_token,
    save_node_material,
    verify_chain,
)
from orch.identity import ca as pki
from orch.identity.material import NodeMaterial
from orch.identity.peer import identity_from_certificate

from .pki import Issued, issue
from .tlsserver import Whoami, client_creds, mtls_server, refused, serve, who


async def test_join_renew_and_remove(tmp_path: Path) -> None:
    # Manager init: the CA, the tokens, the manager's own certificate.
    ca = create_root_ca()
    tokens = new_join_tokens(ca.cert)
    manager = issue(ca, Role.MANAGER)
    served_bundle = pki.cert_pem(ca.cert)

    # Node: the token the operator pasted, the CA fetched and pinned, a key and a CSR.
    token = parse_join_token(f"{tokens.worker}\n")
    trusted = pin_root_ca(served_bundle, token, source="127.0.0.1:7701")
    key = new_private_key()
    csr_pem = pki.csr_pem(create_csr(key))

    # CA side: the token decides the role, the CA chooses the id.
    role = role_for_token(str(token), tokens)
    leaf = issue_certificate(ca, pki.load_csr(csr_pem), node_id=new_id(), role=role)
    answer = pki.cert_pem(*ca.chain_for(leaf))

    # Node: check what came back against the pinned root, then store it.
    chain = pki.load_certs(answer)
    identity = verify_chain(chain, [trusted], cluster_id=ca.cluster_id)
    assert identity.role is Role.WORKER
    save_node_material(tmp_path / "tls", NodeMaterial(key, tuple(chain), (trusted,)))

    # Later, from disk: talk to the manager; the manager sees the CA-chosen id.
    material = load_node_material(tmp_path / "tls")
    node = Issued(material.key, material.leaf, list(material.chain))
    roots = material.roots_pem()
    async with serve(mtls_server(manager, served_bundle), Whoami(ca.cluster_id)) as port:
        assert (await who(port, client_creds(roots, node)))["node_id"] == identity.node_id

    # Renewal: a new key, same id and role (from the peer certificate, not the request).
    new_key = new_private_key()
    renewed = renew_certificate(ca, create_csr(new_key), identity_from_certificate(node.cert))
    assert identity_from_certificate(renewed).node_id == identity.node_id
    assert renewed.serial_number != node.cert.serial_number

    # Removal: the node's valid certificates (old and renewed) are denied.
    deny = DenyList().deny_nodes([identity.node_id])
    renewed_node = Issued(new_key, renewed, [renewed])
    async with serve(mtls_server(manager, served_bundle), Whoami(ca.cluster_id, deny)) as port:
        for holder in (node, renewed_node):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await who(port, client_creds(roots, holder))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_man_in_the_middle_stops_the_join_before_the_token_is_sent() -> None:
    ca, impostor = create_root_ca(), create_root_ca()
    token = new_join_tokens(ca.cert).worker
    with pytest.raises(IdentityError, match="man in the middle"):
        pin_root_ca(pki.cert_pem(impostor.cert), token, source="127.0.0.1:7701")
    # Had the node trusted the impostor's root, it would not reach the real manager either.
    manager = issue(ca, Role.MANAGER)
    node = issue(ca)
    roots = pki.cert_pem(ca.cert)
    async with serve(mtls_server(manager, roots), Whoami(ca.cluster_id)) as port:
        wrong = client_creds(pki.cert_pem(impostor.cert), node)
        assert await refused(port, wrong) == grpc.StatusCode.UNAVAILABLE
        assert json.dumps(await who(port, client_creds(roots, node)))


def test_renewal_cannot_move_a_node_to_another_cluster() -> None:
    ours, theirs = create_root_ca(), create_root_ca()
    peer = identity_from_certificate(issue(theirs).cert)
    with pytest.raises(IdentityError, match="of cluster"):
        renew_certificate(ours, create_csr(new_private_key()), peer)
