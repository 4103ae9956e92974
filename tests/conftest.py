"""Shared fixtures: a real etcd server, a real local cluster, and the `orch` CLI.

Integration tests run against the real thing: an etcd child process, managers and agents
as processes, runc containers. Each fixture removes what it made, also when a test fails.
Waiting is always on a condition with a deadline (``wait_until``), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_support import ARTIFACTS, EtcdMembers

from orch.localcluster.cluster import ClusterSettings, LocalCluster, down, free_port, sweep_stale

ROOT = Path(__file__).resolve().parent.parent
ORCH = str(Path(sys.executable).parent / "orch")


@pytest.fixture(scope="session")
def session_etcd() -> Iterator[EtcdMembers]:
    """A real etcd server for this test session, on free loopback ports: TLS only, with
    client certificates of its own CA, as everywhere (tests_support.EtcdMembers)."""
    if not shutil.which("etcd"):
        pytest.skip("etcd is not installed (make test installs it)")
    members = EtcdMembers(Path(tempfile.mkdtemp(prefix="orch-test-etcd-")), 1, "orch-test-t")
    try:
        asyncio.run(members.start())
        yield members
    finally:
        members.close()


@pytest.fixture
async def store(session_etcd: EtcdMembers):
    """An EtcdStore on the session's etcd, with the orch keyspace emptied before each
    test."""
    from orch.manager.state.api import PREFIX
    from orch.manager.state.store import EtcdStore

    s = await EtcdStore.connect(session_etcd.endpoints, tls=session_etcd.tls)
    await s.delete_prefix(PREFIX)
    try:
        yield s
    finally:
        await s.delete_prefix(PREFIX)
        await s.close()


class Orch:
    """Runs the real `orch` CLI against a cluster, as a user would."""

    binary = ORCH

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.env = {
            **os.environ,
            "ORCH_MANAGER": ",".join(cluster.managers),
            "ORCH_TLS_DIR": cluster.record.tls_dir,
        }

    def at(self, address: str) -> Orch:
        """The CLI pointed at one manager only."""
        single = Orch(self.cluster)
        single.env = {**self.env, "ORCH_MANAGER": address}
        return single

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [ORCH, *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and res.returncode != 0:
            pytest.fail(f"orch {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def tasks(self, service: str = "", all: bool = False) -> list[dict]:
        args = ["ps", *([service] if service else []), *(["-a"] if all else [])]
        return self.json(*args)

    def running(self, service: str) -> list[dict]:
        return [
            t
            for t in self.tasks(service)
            if t["state"] == "running" and t["desired_state"] == "running"
        ]

    def tasks_left(self, service: str) -> list[dict]:
        """Every task of ``service`` still in the store; unlike `orch ps NAME`, this also
        works once the service is removed (cleanup waits on it)."""
        return [t for t in self.tasks(all=True) if t["service"] == service]

    def per_host(self, service: str) -> Counter:
        """Running tasks of ``service`` per hostname."""
        return Counter(t["node_hostname"] for t in self.running(service))


TEST_CLUSTER_PREFIX = "orch-test-cluster-"
# A cluster comes up in 5-15 s on this 2-core VM (more under `make test-stress`); its
# set-up has its own bound so a hang there is named as such, not as the test's timeout.
CLUSTER_UP_TIMEOUT = 180.0
# Each kept log is cut to its last bytes: enough to see the end, bounded on disk.
KEPT_LOG_BYTES = 2 << 20
_failed_modules: dict[str, list[str]] = {}
_kept: list[Path] = []


async def _bounded(coro: Any, timeout: float, what: str) -> Any:
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError:
        pytest.fail(f"{what} took longer than {timeout:g}s", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Remember which tests failed, per module, so module fixtures can keep their logs."""
    report = yield
    if report.failed:
        _failed_modules.setdefault(item.module.__name__, []).append(item.nodeid)
    return report


def keep_logs_if_failed(
    node: pytest.Item | pytest.Collector, logs: Path, also: tuple[str, ...] = ()
) -> None:
    """Copy ``logs`` (a cluster's managers, agents, etcd, registry) to the artifacts dir
    when a test of ``node``'s module failed, or ``also`` names a failure of its own (the
    cluster's set-up, which fails before any test reports): the cluster's state dir is
    removed next."""
    module = getattr(node, "module", None)
    failed = [*_failed_modules.get(module.__name__ if module else "", []), *also]
    if not failed or not logs.is_dir():
        return
    dest = ARTIFACTS / module.__name__.rpartition(".")[2] / logs.parent.name
    dest.mkdir(parents=True, exist_ok=True)
    for log in sorted(logs.glob("*.log")):
        with log.open("rb") as src:
            src.seek(max(0, log.stat().st_size - KEPT_LOG_BYTES))
            (dest / log.name).write_bytes(src.read())
    (dest / "FAILED").write_text("".join(f"{nodeid}\n" for nodeid in failed))
    _kept.append(dest)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _kept:
        terminalreporter.section("logs of failing integration tests")
        for dest in _kept:
            terminalreporter.write_line(f"kept: {dest}")


@pytest.fixture(scope="session", autouse=True)
def _sweep_crashed_runs() -> None:
    """A test run killed hard leaves its cluster behind; the next run removes it."""
    asyncio.run(sweep_stale(Path(tempfile.gettempdir()), TEST_CLUSTER_PREFIX))


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A real local cluster (etcd, registry, one manager, N hosts with an agent each) for
    a test module. N is 1 unless the module sets ``CLUSTER_NODES = 3`` or parametrizes
    the fixture (``@pytest.mark.parametrize("cluster", [3], indirect=True)``); a module may
    also set ``CLUSTER_LIVENESS_TTL`` (seconds), ``CLUSTER_MANAGERS``,
    ``CLUSTER_ETCD_MEMBERS`` (1 or 3) and ``CLUSTER_CERT_LIFETIME`` (e.g. "2m")."""
    missing = [
        b
        for b in ("etcd", "runc", "skopeo", "umoci", "docker-registry", "nsenter")
        if not shutil.which(b)
    ]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (make test installs them)")
    nodes = getattr(request, "param", None) or getattr(request.module, "CLUSTER_NODES", 1)
    state = Path(tempfile.mkdtemp(prefix=TEST_CLUSTER_PREFIX))
    settings = ClusterSettings(
        state_dir=state,
        nodes=nodes,
        managers=getattr(request.module, "CLUSTER_MANAGERS", 1),
        etcd_members=getattr(request.module, "CLUSTER_ETCD_MEMBERS", 1),
        registry_port=free_port(),
        restart_delay=0.5,
        liveness_ttl=getattr(request.module, "CLUSTER_LIVENESS_TTL", None),
        cert_lifetime=getattr(request.module, "CLUSTER_CERT_LIFETIME", None),
    )
    c = LocalCluster(settings)
    set_up = False
    try:
        asyncio.run(_bounded(c.up(), CLUSTER_UP_TIMEOUT, f"local cluster up ({nodes} nodes)"))
        set_up = True
        yield c
    finally:
        keep_logs_if_failed(
            request.node, state / "logs", () if set_up else (f"{request.node.nodeid} set-up",)
        )
        try:
            asyncio.run(down(state))
        except Exception as exc:
            # down keeps its record when something resisted removal (a link still busy
            # a moment after its process died): a second pass finishes or says what is left.
            print(f"local cluster down, first pass: {exc}")
            asyncio.run(down(state))
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def orch(cluster: LocalCluster) -> Orch:
    return Orch(cluster)
