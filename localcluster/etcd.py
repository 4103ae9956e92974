"""The local cluster's etcd: one member, or an odd number of them forming one cluster, as
child processes listening on the underlay's gateway address.

One member is the everyday default. Three let tests (and the chaos test) take members
away: one lost member changes nothing, two lost members take the quorum with them. The
harness (cluster.py) records each member (name, client and peer address, data dir)
before it starts, so a member can be stopped and started again with the same identity
and data, and `down` ends every member through the record. What a member is started
with, and how to tell that the cluster answers, lives here.
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


def member_argv(members: list[dict], i: int, *, token: str, new: bool) -> list[str]:
    """etcd's command line for member ``i``. ``new``: the first start of the cluster;
    else the member rejoins the existing cluster with its data dir (etcd takes the
    membership from there and ignores the initial flags, but they must still agree)."""
    me = members[i]
    initial = ",".join(f"{m['name']}=http://{m['peer']}" for m in members)
    return [
        shutil.which("etcd") or "etcd",
        "--name", me["name"],
        "--data-dir", me["data_dir"],
        "--listen-client-urls", f"http://{me['client']}",
        "--advertise-client-urls", f"http://{me['client']}",
        "--listen-peer-urls", f"http://{me['peer']}",
        "--initial-advertise-peer-urls", f"http://{me['peer']}",
        "--initial-cluster", initial,
        "--initial-cluster-state", "new" if new else "existing",
        # Members of two local clusters never join each other, whatever their ports.
        "--initial-cluster-token", token,
        "--log-level", "warn",
    ]  # fmt: skip


async def wait_answers(endpoints: list[str], timeout: float, what: str) -> None:
    """Until a linearizable read through ``endpoints`` succeeds: the members formed a
    cluster that has a leader (and, for one endpoint, that member caught up with it)."""
    client = Etcd3Client(endpoints)
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


async def leader_index(members: list[dict]) -> int | None:
    """The index of the member that leads, as the members that answer say; None when no
    member answers or none has a leader (no quorum)."""
    for i, member in enumerate(members):
        client = Etcd3Client([member["client"]])
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
