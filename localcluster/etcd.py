"""The local cluster's etcd: one member, or an odd number of them forming one cluster, as
child processes listening on the underlay's gateway address.

One member is the everyday default. Three let tests (and the chaos test) take members
away: one lost member changes nothing, two lost members take the quorum with them. The
harness (cluster.py) records each member (name, client and peer address, data dir)
before it starts, so a member can be stopped and started again with the same identity
and data, and `down` ends every member through the record. What a member is started
with, and how to tell that the cluster answers, lives here.

etcd speaks TLS only, with client certificates of its own CA (identity/etcdpki.py): the
local cluster makes that PKI at `up` in ``<state_dir>/etcd-pki`` (0700, keys 0600), one
server and one peer certificate per member, a client certificate for the harness itself
(readiness checks, tests, chaos) and one per manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from pathlib import Path

import grpc
from etcd3aio import Etcd3Client, EtcdError

from orch.errors import OrchError
from orch.identity import etcdpki
from orch.identity.etcdpki import SERVER_NAME, EtcdClientTLS

MEMBER_COUNTS = (1, 3, 5)
"""Sizes a local etcd may have: odd, so that a majority is well defined."""


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports free on ``host`` (held open together while picked, so no
    two are the same)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


HARNESS_CLIENT = "orch-dev-harness"
"""The client certificate the harness itself uses (readiness, tests, chaos, benches)."""


def pki_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "etcd-pki"


def make_pki(state_dir: Path, members: list[dict]) -> Path:
    """A new etcd PKI for ``members`` (their client address's host is their SAN) and the
    harness's client certificate, in ``pki_dir(state_dir)``; any earlier one is replaced."""
    directory = pki_dir(state_dir)
    shutil.rmtree(directory, ignore_errors=True)
    specs = {m["name"]: [m["client"].rpartition(":")[0]] for m in members}
    etcdpki.write_pki(directory, specs, [HARNESS_CLIENT])
    return directory


def client_tls(state_dir: Path, client: str = HARNESS_CLIENT) -> EtcdClientTLS:
    """Client ``client``'s TLS material (default: the harness's)."""
    return EtcdClientTLS.from_dir(pki_dir(state_dir), client)


def client_files(state_dir: Path, client: str) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) files of client ``client``, issued on first use (a manager
    added after `up` gets its certificate when it first starts)."""
    directory = pki_dir(state_dir)
    cert, key = (directory / f for f in etcdpki.client_files(client))
    if not (cert.exists() and key.exists()):
        etcdpki.add_client(directory, etcdpki.load_ca(directory), client)
    return directory / etcdpki.CA_CERT, cert, key


def manager_flags(state_dir: Path, client: str) -> list[str]:
    """orch-manager's etcd TLS flags for the client certificate ``client``."""
    ca, cert, key = client_files(state_dir, client)
    return ["--etcd-ca-file", str(ca), "--etcd-cert-file", str(cert), "--etcd-key-file", str(key)]


def etcdctl_flags(state_dir: Path) -> list[str]:
    """etcdctl's TLS flags as the harness's client."""
    ca, cert, key = client_files(state_dir, HARNESS_CLIENT)
    return ["--cacert", str(ca), "--cert", str(cert), "--key", str(key)]


def etcdctl_argv(state_dir: Path, endpoints: str) -> list[str]:
    """etcdctl's command line up to its command, as the harness's client."""
    etcdctl = shutil.which("etcdctl") or "etcdctl"
    return [etcdctl, "--endpoints", endpoints, *etcdctl_flags(state_dir)]


def member_specs(host: str, count: int, state_dir: Path) -> list[dict]:
    """The record of ``count`` members on ``host``: name, client and peer address
    (host:port), data dir (``<state_dir>/etcd/<i>``)."""
    ports = free_ports(host, 2 * count)
    return [
        {
            "name": f"orch-dev-{i}",
            "client": f"{host}:{ports[2 * i]}",
            "peer": f"{host}:{ports[2 * i + 1]}",
            "data_dir": str(Path(state_dir) / "etcd" / str(i)),
        }
        for i in range(count)
    ]


def member_argv(members: list[dict], i: int, *, token: str, new: bool, pki: Path) -> list[str]:
    """etcd's command line for member ``i``, TLS only with the certificates in ``pki``
    (make_pki): clients and peers must present a certificate of the etcd CA. ``new``:
    the first start of the cluster; else the member rejoins the existing cluster with
    its data dir (etcd takes the membership from there and ignores the initial flags,
    but they must still agree)."""
    me = members[i]
    files = {k: str(Path(pki) / v) for k, v in etcdpki.member_files(me["name"]).items()}
    ca = str(Path(pki) / etcdpki.CA_CERT)
    initial = ",".join(f"{m['name']}=https://{m['peer']}" for m in members)
    return [
        shutil.which("etcd") or "etcd",
        "--name", me["name"],
        "--data-dir", me["data_dir"],
        "--listen-client-urls", f"https://{me['client']}",
        "--advertise-client-urls", f"https://{me['client']}",
        "--listen-peer-urls", f"https://{me['peer']}",
        "--initial-advertise-peer-urls", f"https://{me['peer']}",
        "--initial-cluster", initial,
        "--client-cert-auth", "--trusted-ca-file", ca,
        "--cert-file", files["cert"], "--key-file", files["key"],
        "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
        "--peer-cert-file", files["peer_cert"], "--peer-key-file", files["peer_key"],
        "--initial-cluster-state", "new" if new else "existing",
        # Members of two local clusters never join each other, whatever their ports.
        "--initial-cluster-token", token,
        "--log-level", "warn",
    ]  # fmt: skip


def connect(endpoints: list[str], tls: EtcdClientTLS) -> Etcd3Client:
    """An etcd client of ``endpoints`` over TLS (not connected yet)."""
    return Etcd3Client(endpoints, tls_server_name=SERVER_NAME, **tls.channel_args())


async def wait_answers(
    endpoints: list[str], timeout: float, what: str, *, tls: EtcdClientTLS
) -> None:
    """Until a linearizable read through ``endpoints`` succeeds: the members formed a
    cluster that has a leader (and, for one endpoint, that member caught up with it)."""
    client = connect(endpoints, tls)
    await client.connect()
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await client.kv.get("/orch/health", timeout=1.0, max_attempts=1)
                    return
                except (EtcdError, grpc.aio.AioRpcError, TimeoutError):
                    await asyncio.sleep(0.1)
    except TimeoutError as exc:
        raise OrchError(f"{what} did not answer a read within {timeout:g}s") from exc
    finally:
        await client.close()


async def leader_index(members: list[dict], *, tls: EtcdClientTLS) -> int | None:
    """The index of the member that leads, as the members that answer say; None when no
    member answers or none has a leader (no quorum)."""
    for i, member in enumerate(members):
        client = connect([member["client"]], tls)
        await client.connect()
        try:
            status = await client.maintenance.status(timeout=1.0, max_attempts=1)
        except (EtcdError, grpc.aio.AioRpcError, TimeoutError):
            continue
        finally:
            await client.close()
        if status.leader and status.leader == status.header.member_id:
            return i
    return None
