"""Helpers for tests: waiting on a condition with a deadline (never a bare sleep), and
reaching into a local cluster's hosts (network namespaces the root netns cannot see into).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import secrets
import socket
import string
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnslib import QTYPE, DNSRecord

from orch.proto import control_pb2_grpc

# Where tests keep what explains a failure (a failing module's cluster logs, a chaos run's
# fault log): make test prints the paths, .ci/run tails them.
ARTIFACTS = Path(
    os.environ.get(
        "ORCH_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "build/test-artifacts"
    )
)


def wait_until(
    cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Return cond()'s first truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or cond}; last value: {last!r}")


def etcd_state(cluster) -> tuple[int, list[str]]:
    """The etcd revision and every orch key of a LocalCluster: equal before and after =
    nothing written."""
    ep = cluster.record.etcd
    status = subprocess.run(
        ["etcdctl", "--endpoints", ep, "endpoint", "status", "-w", "json"],
        capture_output=True, text=True, check=True, env={"ETCDCTL_API": "3"},
    ).stdout  # fmt: skip
    revision = json.loads(status)[0]["Status"]["header"]["revision"]
    keys = subprocess.run(
        ["etcdctl", "--endpoints", ep, "get", "--prefix", "/orch/v1/", "--keys-only"],
        capture_output=True, text=True, check=True, env={"ETCDCTL_API": "3"},
    ).stdout.split()  # fmt: skip
    return revision, keys


_FETCH = """
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as resp:
        sys.stdout.write(resp.read().decode())
except OSError as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}")
    sys.exit(2)
"""


def fetch_from(cluster: Any, hostname: str, url: str, timeout: float = 5.0) -> str:
    """GET ``url`` from inside host ``hostname`` of a LocalCluster and return the body.
    Raises OSError when the fetch fails (so callers can retry with ``wait_until``).
    Python's urllib, not wget: busybox-static's wget segfaults on this host."""
    res = cluster.run_on(
        hostname, [sys.executable, "-I", "-c", _FETCH, url, str(timeout)], timeout=timeout + 10
    )
    if res.returncode != 0:
        raise OSError(f"fetch {url} on {hostname}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def fresh_netns_base() -> str:
    """ "orcht" + 3 random characters that no netns of this machine starts with: a name
    prefix for one test's hosts, endpoints and links."""
    from orch.overlay import netns

    alphabet = string.ascii_lowercase + string.digits
    while True:
        base = "orcht" + "".join(secrets.choice(alphabet) for _ in range(3))
        if not netns.list_netns(base):
            return base


def runc_running(cluster, hostname: str) -> set[str]:
    """Ids of the running containers on a host. A list that races a container's removal
    may fail; it is asked again."""
    root = cluster.host(hostname)["runc_root"]
    for _ in range(5):
        res = subprocess.run(
            ["runc", "--root", root, "list", "--format", "json"], capture_output=True, text=True
        )
        if res.returncode == 0:
            return {
                c["id"] for c in json.loads(res.stdout or "null") or [] if c["status"] == "running"
            }
    pytest.fail(f"runc list on {hostname}: {res.stderr.strip()}")


def dns_query(address: str, name: str, timeout: float = 1.0) -> set[str]:
    """One UDP query to a host's node listener from this netns: the A records (none on
    any error)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(DNSRecord.question(name).pack(), (address, 53))
            reply = DNSRecord.parse(s.recv(4096))
        except OSError:
            return set()
    return {str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A}


async def eventually(
    cond: Callable[[], Any], timeout: float = 10.0, what: str = "", interval: float = 0.05
) -> Any:
    """The async tests' wait_until: ``cond()`` (a value, or an awaitable of one) until it
    is neither None nor False, then that value (so 0 and [] count); the test fails after
    ``timeout`` seconds. For state with no event to wait on (a pid file, an etcd member's
    own status); where a watch or subscription serves, wait on that instead."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or cond}; last: {value!r}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def control_server(servicer: control_pb2_grpc.ControlServicer) -> AsyncIterator[str]:
    """A Control API server on a free local port, played by ``servicer``; its address."""
    server = grpc.aio.server()
    control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
