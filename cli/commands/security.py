"""``orch join-token worker|manager [--rotate]`` and ``orch ca issue-admin NAME``: the
cluster CA's administration (the ClusterCA service of a manager's mTLS port, admin
certificates only).

``issue-admin`` makes the new key and its CSR here: the key never leaves this machine;
the manager signs the CSR and the credentials are written as the CLI reads them
(ca.pem, admin.pem, admin-key.pem, 0600 in a 0700 directory).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from orch.cli.context import Context
from orch.errors import OrchError
from orch.identity import ca as pki
from orch.identity.channels import ADMIN_KEY, ClientTLS, save_admin_tls
from orch.proto import ca_pb2, ca_pb2_grpc


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "join-token",
        parents=[common],
        help="print the join token of a role (--rotate: replace it first)",
    )
    p.add_argument("role", choices=["worker", "manager"])
    p.add_argument(
        "--rotate",
        action="store_true",
        help="make a new token; the old one admits no new node (joined nodes keep running)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print the token only")
    p.set_defaults(func=run_join_token)

    ca = subparsers.add_parser("ca", parents=[common], help="the cluster CA")
    sub = ca.add_subparsers(dest="ca_command", metavar="COMMAND", required=True)
    issue = sub.add_parser(
        "issue-admin",
        parents=[common],
        help="new admin credentials for the CLI (key made here, signed by the cluster CA)",
    )
    issue.add_argument("name", help="who they are for (recorded with the certificate)")
    issue.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="where to write ca.pem, admin.pem, admin-key.pem (made 0700; refused if it "
        "already holds credentials)",
    )
    issue.set_defaults(func=run_issue_admin)


def run_join_token(ctx: Context) -> int:
    request = ca_pb2.JoinTokenRequest(role=ctx.args.role, rotate=ctx.args.rotate)
    token = ctx.client().call("JoinToken", request, service=ca_pb2_grpc.ClusterCAStub).token
    if ctx.args.quiet:
        print(token, file=ctx.out)
        return 0
    what = "new " if ctx.args.rotate else ""
    print(f"{what}{ctx.args.role} join token: {token}", file=ctx.out)
    print(
        f"join: orch-{'agent' if ctx.args.role == 'worker' else 'manager'} --join-token "
        f"<token> ...",
        file=ctx.out,
    )
    return 0


def run_issue_admin(ctx: Context) -> int:
    out = Path(ctx.args.out).expanduser()
    if (out / ADMIN_KEY).exists():
        raise OrchError(f"{out} already holds admin credentials: choose another --out")
    key = pki.new_private_key()
    request = ca_pb2.IssueAdminRequest(name=ctx.args.name, csr_pem=pki.csr_pem(pki.create_csr(key)))
    answer = ctx.client().call("IssueAdmin", request, service=ca_pb2_grpc.ClusterCAStub)
    chain = pki.load_certs(answer.chain_pem, what="the certificate the manager sent")
    if chain[0].public_key() != key.public_key():
        raise OrchError("the manager sent a certificate for another key: not written")
    save_admin_tls(out, ClientTLS(pki.key_pem(key), answer.chain_pem, answer.roots_pem))
    print(f"admin {ctx.args.name} ({answer.node_id}): credentials in {out}", file=ctx.out)
    return 0
