"""orch identity: the cluster PKI core (see docs/identity.md).

Pure functions and small frozen dataclasses over ``cryptography`` objects: the CA and
node certificates (ca), join tokens and CA pinning (tokens), peer identity (peer),
renewal and the deny list (lifecycle), CA rotation (rotation), key files (material);
and the two grpc pieces every process shares: mTLS channels and server credentials
(channels), the joiner's side of a join (join). Nothing here talks to etcd or serves
gRPC; the manager (manager/ca/) and the agent wire it in.
"""

from orch.identity.ca import (
    NODE_VALIDITY,
    ROOT_VALIDITY,
    CertificateAuthority,
    Role,
    create_csr,
    create_root_ca,
    issue_certificate,
    new_id,
    new_private_key,
)
from orch.identity.errors import CAPinMismatchError, CertificateDeniedError, TokenError
from orch.identity.lifecycle import DenyList, renew_certificate, renewal_delay, renewal_time
from orch.identity.material import NodeMaterial, load_node_material, save_node_material
from orch.identity.peer import (
    NodeIdentity,
    identity_from_auth_context,
    identity_from_certificate,
    verify_chain,
)
from orch.identity.rotation import RotationPlan, finish_rotation, pending_nodes, start_rotation
from orch.identity.tokens import (
    JoinToken,
    JoinTokens,
    new_join_tokens,
    parse_join_token,
    pin_root_ca,
    role_for_token,
    rotate_join_token,
)

__all__ = [
    "NODE_VALIDITY",
    "ROOT_VALIDITY",
    "CAPinMismatchError",
    "CertificateAuthority",
    "CertificateDeniedError",
    "DenyList",
    "JoinToken",
    "JoinTokens",
    "NodeIdentity",
    "NodeMaterial",
    "Role",
    "RotationPlan",
    "TokenError",
    "create_csr",
    "create_root_ca",
    "finish_rotation",
    "identity_from_auth_context",
    "identity_from_certificate",
    "issue_certificate",
    "load_node_material",
    "new_id",
    "new_join_tokens",
    "new_private_key",
    "parse_join_token",
    "pending_nodes",
    "pin_root_ca",
    "renew_certificate",
    "renewal_delay",
    "renewal_time",
    "role_for_token",
    "rotate_join_token",
    "save_node_material",
    "start_rotation",
    "verify_chain",
]
