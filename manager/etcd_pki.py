"""`orch-manager etcd-pki`: make (or extend) etcd's PKI on the operator's machine.

    orch-manager etcd-pki --out DIR --member etcd1=10.0.0.1 --member etcd2=10.0.0.2 \\
        --client mgr1 --client mgr2

writes the etcd CA (first run only), each member's server and peer certificate, and a
client certificate per manager into DIR (0700, files 0600); deploy/README.md says which
file goes where. Run again on the same DIR to add members or clients: the CA there is
reused and no existing file is overwritten. The CA key stays in DIR, never in etcd.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orch.errors import IdentityError
from orch.identity import etcdpki


def _member(text: str) -> tuple[str, list[str]]:
    name, sep, addresses = text.partition("=")
    if not sep or not name or not addresses:
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=IP[,IP...]")
    return name, addresses.split(",")


def _targets(out: Path, members: dict[str, list[str]], clients: list[str]) -> list[Path]:
    files = [out / f for m in members for f in etcdpki.member_files(m).values()]
    return files + [out / f for c in clients for f in etcdpki.client_files(c)]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="orch-manager etcd-pki",
        description="Make etcd's own CA and its member and client certificates (TLS only).",
    )
    p.add_argument("--out", required=True, type=Path, help="directory (made 0700)")
    p.add_argument(
        "--member",
        action="append",
        default=[],
        type=_member,
        metavar="NAME=IP[,IP...]",
        help="an etcd member and the addresses its clients and peers dial (repeatable)",
    )
    p.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="a manager's client certificate, CN NAME (repeatable)",
    )
    args = p.parse_args(argv)
    members = dict(args.member)
    if len(members) != len(args.member):
        p.error("--member: a member name is given twice")
    out: Path = args.out
    try:
        if existing := [f.name for f in _targets(out, members, args.client) if f.exists()]:
            raise IdentityError(
                f"{out} already holds {', '.join(existing)}: remove it to issue it again"
            )
        ca = etcdpki.load_ca(out) if (out / etcdpki.CA_CERT).exists() else None
        etcdpki.write_pki(out, members, args.client, ca=ca)
    except IdentityError as exc:
        print(f"orch-manager etcd-pki: {exc}", file=sys.stderr)
        return 1
    made = "extended" if ca is not None else "made"
    print(f"etcd PKI {made} in {out}: {len(members)} member(s), {len(args.client)} client(s)")
    return 0
