"""Helpers for tests: waiting on a condition with a deadline (never a bare sleep), and
reaching into a local cluster's hosts (network namespaces the root netns cannot see into).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import os
import secrets
import shutil
import socket
import string
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnslib import QTYPE, DNSRecord

from orch.localcluster import etcd as local_etcd
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
    etcdctl = cluster.etcdctl_argv()
    status = subprocess.run(
        [*etcdctl, "endpoint", "status", "-w", "json"],
        capture_output=True, text=True, check=True, env={"ETCDCTL_API": "3"},
    ).stdout  # fmt: skip
    revision = json.loads(status)[0]["Status"]["header"]["revision"]
    keys = subprocess.run(
        [*etcdctl, "get", "--prefix", "/orch/v1/", "--keys-only"],
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


def dns_answer(address: str, name: str, timeout: float = 1.0) -> set[str] | None:
    """One UDP query to a host's node listener from this netns: the A records of the
    reply (empty for NXDOMAIN or no records), or None when no reply came (a lost datagram
    or a timeout is not an answer: callers ask again or count it apart)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(DNSRecord.question(name).pack(), (address, 53))
            reply = DNSRecord.parse(s.recv(4096))
        except OSError:
            return None
    return {str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A}


def dns_query(address: str, name: str, timeout: float = 1.0) -> set[str]:
    """dns_answer, with no reply as no records: for waits, where either means "not yet"."""
    return dns_answer(address, name, timeout) or set()


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


class TestPKI:
    """A cluster CA for in-process servers and their clients: real certificates and a
    real mTLS handshake, as on a manager's port (no server of orch is plaintext)."""

    def __init__(self) -> None:
        from orch.identity import ca as pki

        self.ca = pki.create_root_ca()
        self.manager = self.material(pki.Role.MANAGER)

    def material(self, role: Any, *, node_id: str | None = None) -> Any:
        from orch.identity import ca as pki
        from orch.identity.material import NodeMaterial

        key = pki.new_private_key()
        cert = pki.issue_certificate(
            self.ca, pki.create_csr(key), node_id=node_id or pki.new_id(), role=role
        )
        return NodeMaterial(key, (cert,), (self.ca.cert,))

    def client(self, role: Any = None, *, node_id: str | None = None) -> Any:
        """ClientTLS of a new certificate of ``role`` (default admin)."""
        from orch.identity import ca as pki
        from orch.identity.channels import ClientTLS

        return ClientTLS.from_material(self.material(role or pki.Role.ADMIN, node_id=node_id))

    def write_admin(self, directory: Path) -> Path:
        """Admin credentials as the CLI finds them (ca.pem, admin.pem, admin-key.pem)."""
        from orch.identity.channels import save_admin_tls

        save_admin_tls(directory, self.client())
        return directory

    def serve(self, server: grpc.aio.Server, address: str = "127.0.0.1:0") -> int:
        """Add an mTLS port serving the manager certificate; its port number."""
        from orch.identity import channels

        return server.add_secure_port(address, channels.server_credentials(lambda: self.manager))


_PKI: list[TestPKI] = []


def test_pki() -> TestPKI:
    """The test session's CA (made once: key generation is not free)."""
    if not _PKI:
        _PKI.append(TestPKI())
    return _PKI[0]


test_pki.__test__ = False  # type: ignore[attr-defined]  # not a test, whatever its name
TestPKI.__test__ = False  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def control_server(servicer: control_pb2_grpc.ControlServicer) -> AsyncIterator[str]:
    """A Control API server on a free local mTLS port (test_pki's manager certificate),
    played by ``servicer``; its address."""
    server = grpc.aio.server()
    control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
    port = test_pki().serve(server)
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


class Sampler:
    """Samples ``probe()`` in a thread all through a ``with`` block, for claims about an
    interval ("never fewer than 4 healthy", "stays running", "no other node"): the claim is
    checked on every sample, not once.

    The sampler's own failure fails the test: a probe that raises ends the block's check
    with that error, and a sampler that stalled (no sample for ``max_gap`` seconds: the
    interval was not watched) or never sampled fails too. ``__enter__`` returns after the
    first sample, and ``__exit__`` takes a last one, so the samples span the whole block.

        with Sampler(lambda: len(healthy()), what="healthy replicas") as s:
            update()
        s.assert_all(lambda n: n >= 4, "at least 4 healthy")
    """

    def __init__(
        self,
        probe: Callable[[], Any],
        interval: float = 0.05,
        what: str = "",
        max_gap: float = 5.0,
    ) -> None:
        self.probe = probe
        self.interval = interval
        self.what = what or getattr(probe, "__name__", "probe")
        self.max_gap = max_gap
        self.samples: list[tuple[float, Any]] = []  # (monotonic time the probe began, value)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sampler {what}")
        self._began = 0.0

    @property
    def values(self) -> list[Any]:
        return [v for _, v in self.samples]

    def _sample(self) -> None:
        at = time.monotonic()
        self.samples.append((at, self.probe()))

    def _run(self) -> None:
        try:
            while True:
                self._sample()
                self._first.set()
                if self._stop.wait(self.interval):
                    self._sample()  # the last one begins after the block ended
                    return
        except BaseException as exc:  # handed to the test in __exit__
            self.error = exc
        finally:
            self._first.set()

    def __enter__(self) -> Sampler:
        self._began = time.monotonic()
        self._thread.start()
        if not self._first.wait(self.max_gap) or self.error:
            self._stop.set()
            self._check()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        ended = time.monotonic()
        self._stop.set()
        self._thread.join(self.max_gap + 30)
        if exc_type is None:  # the block's own error, if any, says more
            self._check(ended)

    def _check(self, ended: float | None = None) -> None:
        if self.error is not None:
            pytest.fail(f"sampler of {self.what} failed: {self.error!r}", pytrace=True)
        if self._thread.is_alive():
            pytest.fail(f"sampler of {self.what} stuck in its probe")
        if not self.samples:
            pytest.fail(f"sampler of {self.what} took no sample within {self.max_gap}s")
        if ended is None:
            return
        times = [t for t, _ in self.samples]
        if times[-1] < ended:
            pytest.fail(f"sampler of {self.what} stopped before the interval ended")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if gaps and max(gaps) > self.max_gap:
            at = times[gaps.index(max(gaps))] - self._began
            pytest.fail(
                f"sampler of {self.what} took no sample for {max(gaps):.1f}s "
                f"(from {at:.1f}s in): the interval was not watched"
            )

    def assert_all(self, ok: Callable[[Any], Any], claim: str = "") -> None:
        """Fail unless ``ok(value)`` holds for every sample, naming the ones that broke it."""
        bad = [(t - self._began, v) for t, v in self.samples if not ok(v)]
        if bad:
            shown = ", ".join(f"{t:.2f}s: {v!r}" for t, v in bad[:10])
            pytest.fail(
                f"{claim or self.what}: broken in {len(bad)} of {len(self.samples)} samples "
                f"over {self.samples[-1][0] - self._began:.1f}s ({shown})"
            )


def holds_for(
    cond: Callable[[], Any],
    seconds: float,
    interval: float = 0.05,
    what: str = "",
    max_gap: float = 5.0,
) -> list[Any]:
    """``cond()`` truthy at every sample for ``seconds`` (a "stays" claim, watched through
    the interval it is about; the last sample begins after it). Fails at the first sample
    that is not, and if two samples are more than ``max_gap`` apart (a probe that hung
    left the interval unwatched). Returns the values."""
    began = time.monotonic()
    values: list[Any] = []
    last = began
    while True:
        at = time.monotonic()
        if at - last > max_gap:
            pytest.fail(f"{what or cond}: no sample for {at - last:.1f}s, not watched")
        value = cond()
        values.append(value)
        if not value:
            pytest.fail(f"{what or cond} broke {at - began:.2f}s in: {value!r}")
        if at - began >= seconds:
            return values
        last = at
        time.sleep(min(interval, max(0.0, began + seconds - time.monotonic())))


async def always(
    cond: Callable[[], Any], seconds: float, what: str = "", interval: float = 0.0
) -> None:
    """The async tests' holds_for: ``cond()`` (a value, or an awaitable of one) is truthy at
    every check for ``seconds``; between checks the loop runs everything else that is
    ready (``interval`` 0: one pass of the event loop per check). Fails at the first
    check that is not, or if fewer than 2 checks ran (nothing was watched)."""
    deadline = time.monotonic() + seconds
    checks = 0
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        checks += 1
        if not value:
            pytest.fail(f"{what or cond} broke after {checks} checks: {value!r}")
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(interval)
    if checks < 2:
        pytest.fail(f"{what or cond}: checked only {checks} time(s) in {seconds}s")


class ControlProbe:
    """The Control API called in-process: a probe for samplers, at a few ms a call where
    running the CLI costs an interpreter start (seconds on a loaded 2-core machine, enough
    to leave a claimed interval unwatched)."""

    def __init__(self, cluster: Any) -> None:
        """``cluster``: a LocalCluster (its managers and admin credentials)."""
        from orch.cli.client import ControlClient

        self.client = ControlClient(cluster.managers, tls=cluster.tls())

    def __enter__(self) -> ControlProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def tasks(self, service: str = "", history: bool = False) -> list:
        from orch.proto import control_pb2

        request = control_pb2.ListTasksRequest(service=service, include_history=history)
        return list(self.client.call("ListTasks", request).tasks)

    def nodes(self) -> dict[str, Any]:
        """hostname -> Node, as `orch nodes` shows them."""
        from orch.proto import control_pb2

        listed = self.client.call("ListNodes", control_pb2.ListNodesRequest()).nodes
        return {n.description.hostname: n for n in listed}

    def running_per_host(self, service: str) -> Counter:
        """Running tasks of ``service`` meant to run, per hostname (Orch.per_host's view)."""
        from orch.proto import types_pb2

        hostnames = {n.id: h for h, n in self.nodes().items()}
        return Counter(
            hostnames.get(t.node_id, t.node_id)
            for t in self.tasks(service)
            if t.status.state == types_pb2.RUNNING and t.desired_state == types_pb2.RUNNING
        )


STEADY_SERVICE = """
apiVersion: orch/v1
kind: Service
metadata: {name: steady}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.2; done']
  replicas: 2
  stop_grace_period: 100ms
"""
"""Two replicas that stop at once on SIGTERM; REGISTRY is replaced by the cluster's."""


class EtcdMembers:
    """Real etcd members as child processes on loopback, TLS only, as the local cluster
    runs them (orch.localcluster.etcd: the same PKI, flags and readiness check): the one
    way tests start etcd. Kill and restart them by index; ``close`` ends them all and
    removes their data and keys."""

    def __init__(self, base: Path, count: int, token: str) -> None:
        self.base = base
        self.token = token
        self.members = local_etcd.member_specs("127.0.0.1", count, base)
        self.pki = local_etcd.make_pki(base, self.members)
        self.tls = local_etcd.client_tls(base)
        self.procs: list[subprocess.Popen | None] = [None] * count
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def endpoints(self) -> list[str]:
        return [m["client"] for m in self.members]

    def spawn(self, i: int, *, new: bool) -> None:
        argv = local_etcd.member_argv(self.members, i, token=self.token, new=new, pki=self.pki)
        with open(self.logs / f"etcd-{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(
                argv, stdout=log, stderr=log, env={**os.environ, "ETCD_UNSUPPORTED_ARCH": ""}
            )

    async def start(self, timeout: float = 30.0) -> None:
        """First start of every member; until the cluster answers a read."""
        for i in range(len(self.members)):
            self.spawn(i, new=True)
        await local_etcd.wait_answers(self.endpoints, timeout, "the test etcd", tls=self.tls)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.kill()
            proc.wait(10)
            self.procs[i] = None

    async def restart(self, *indexes: int) -> None:
        """Start the given members again (if down) and wait until each answers reads."""
        for i in indexes:
            if self.procs[i] is None:
                self.spawn(i, new=False)
        for i in indexes:
            await local_etcd.wait_answers([self.endpoints[i]], 30, f"etcd member {i}", tls=self.tls)

    async def restore(self) -> None:
        await self.restart(*range(len(self.members)))

    async def leader(self) -> int:
        return await eventually(
            lambda: local_etcd.leader_index(self.members, tls=self.tls), 15, "an etcd leader"
        )

    def etcdctl(self, *args: str, endpoints: str | None = None) -> list[str]:
        """etcdctl's argv as a client of these members (the test client's certificate)."""
        return [*local_etcd.etcdctl_argv(self.base, endpoints or ",".join(self.endpoints)), *args]

    def close(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)
        shutil.rmtree(self.base, ignore_errors=True)
