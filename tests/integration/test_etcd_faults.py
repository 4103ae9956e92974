"""etcd faults on a real cluster (issue 5, part 4): 3 etcd members, 2 managers, 2 hosts.

One member lost (kill -9 of the etcd leader member, the harder case): nothing visible
changes. `orch scale`, issued while the two members left elect a leader, waits for the
election (bounded by the manager's Store timeout) and works, converges, no task is replaced, the manager leadership
stays put; the member, started again, rejoins and catches up.

Quorum lost (kill -9 of two members): `orch scale` and `orch apply` fail with one clear
line once the manager's Store timeout (10 s) ran out, and the CLI does not try the other
manager; the manager answers within that timeout plus 1.5 s (timed in-process: the CLI's
own start-up is not the manager's to bound); reads answer from the managers' views; the
leading manager steps down; the agents keep every container running. Once the members are
back the managers elect a leader, the nodes are READY, not a task was replaced, and a scale
converges, with no manual step.

Every test puts back what it took away (members started, service removed), also when it
fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import Sampler, runc_running, wait_until

from orch.cli.client import ControlClient
from orch.errors import OrchError
from orch.manager.state.store import DEFAULT_TIMEOUT
from orch.proto import control_pb2

pytestmark = pytest.mark.integration

CLUSTER_ETCD_MEMBERS = 3
CLUSTER_NODES = 2
CLUSTER_MANAGERS = 2

STORE_TIMEOUT = DEFAULT_TIMEOUT  # what a write waits for etcd before it fails
# A scale during an etcd election: the election (p99 2.6 s under the stress hogs,
# bench/etcd_election.py) and a resent attempt fit in the Store's timeout, which is the
# system's promise; plus the CLI's own start, up to 3 s on this busy 2-core machine.
ANSWER_BOUND = STORE_TIMEOUT + 3.0
UNAVAILABLE = "orch: the cluster store (etcd) is unavailable ("

SERVICE = """
apiVersion: orch/v1
kind: Service
metadata: {name: NAME}
spec:
  image: REGISTRY/busybox:latest
  command: [sleep, "1000000"]
  replicas: REPLICAS
  stop_grace_period: 100ms
"""


def manifest(cluster, tmp_path: Path, name: str, replicas: int) -> Path:
    path = tmp_path / f"{name}-{replicas}.yaml"
    text = SERVICE.replace("NAME", name).replace("REGISTRY", cluster.record.registry)
    path.write_text(text.replace("REPLICAS", str(replicas)))
    return path


def etcdctl(cluster, *args: str, endpoints: str | None = None) -> str:
    res = subprocess.run(
        [*cluster.etcdctl_argv(endpoints), *args],
        capture_output=True,
        text=True,
        env={"ETCDCTL_API": "3"},
        timeout=30,
    )
    return res.stdout.strip() if res.returncode == 0 else ""


def manager_leader(cluster) -> str:
    return etcdctl(cluster, "get", "--print-value-only", "/orch/v1/leader")


def containers(cluster) -> dict[str, set[str]]:
    return {a["hostname"]: runc_running(cluster, a["hostname"]) for a in cluster.record.agents}


def ids(tasks: list[dict]) -> set[str]:
    return {t["id"] for t in tasks}


def all_ready(orch) -> bool:
    return all(n["status"] == "ready" for n in orch.json("nodes"))


def rpc_timed(cluster, method: str, request) -> tuple[float, str]:
    """A Control API call to the first manager only, in-process: (seconds the manager
    took to answer, its error text or ""). The manager's own answer time, without the
    CLI's interpreter start (seconds on this loaded 2-core machine)."""
    with ControlClient([cluster.managers[0]], tls=cluster.tls()) as client:
        start = time.monotonic()
        try:
            client.call(method, request, timeout=30)
        except OrchError as exc:
            return time.monotonic() - start, str(exc)
        return time.monotonic() - start, ""


def timed(orch, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    res = orch(*args, check=False)
    return time.monotonic() - start, res


def restore_etcd(cluster) -> None:
    """Start every member that is down (each waits until it serves reads)."""
    for i in range(len(cluster.record.etcd_members)):
        if f"etcd-{i}" not in cluster.record.pids:
            asyncio.run(cluster.start_etcd_member(i))


@pytest.fixture
def steady(orch, cluster, tmp_path: Path) -> Iterator[str]:
    """Service ``steady`` with 2 replicas running (one per host); afterwards every etcd
    member is up again, a manager leads, and the service is gone."""
    name = "steady"
    try:
        orch("apply", "-f", str(manifest(cluster, tmp_path, name, 2)))
        wait_until(lambda: len(orch.running(name)) == 2, 60, what="2 replicas running")
        yield name
    finally:
        restore_etcd(cluster)
        wait_until(lambda: manager_leader(cluster), 30, what="a leading manager")

        def removed() -> bool:
            res = orch("rm", name, check=False)
            return res.returncode == 0 or "no such service" in res.stderr

        wait_until(removed, 30, 0.5, what=f"orch rm {name}")

        def gone() -> bool:
            return not [t for t in orch.tasks(all=True) if t["service"] == name]

        wait_until(gone, 30, what=f"{name}'s tasks gone")


def test_losing_the_etcd_leader_member_changes_nothing_visible(orch, cluster, steady) -> None:
    before = ids(orch.running(steady))
    leader = wait_until(lambda: manager_leader(cluster), 10, what="a leading manager")
    victim = asyncio.run(cluster.etcd_leader())
    assert victim is not None, "no etcd leader"

    # The manager leadership stays put all along: sampled from the kill to the end of the
    # scale ("" while etcd itself elects a new leader member and cannot answer: no sample).
    with Sampler(lambda: manager_leader(cluster), 0.2, "the leading manager") as leaders:
        asyncio.run(cluster.stop_etcd_member(victim, crash=True))
        took, res = timed(orch, "scale", f"{steady}=3")
        assert res.returncode == 0, res.stderr
        assert took < ANSWER_BOUND, f"scale took {took:.1f}s"
        running = wait_until(
            lambda: len(r := orch.running(steady)) == 3 and r, 30, what="3 running"
        )
    assert before <= ids(running), "a task was replaced"
    assert not [t for t in orch.tasks(steady, all=True) if t["state"] == "orphaned"]
    assert all_ready(orch)
    leaders.assert_all(lambda lead: lead in ("", leader), "the manager leadership stayed put")
    assert sum(1 for lead in leaders.values if lead) >= 3, leaders.values
    assert manager_leader(cluster) == leader, "the manager leadership moved"

    # Back, the member rejoins and catches up: its own (serializable) copy has the scale.
    asyncio.run(cluster.start_etcd_member(victim))
    endpoint = cluster.record.etcd_members[victim]["client"]

    def has_scale() -> bool:
        raw = etcdctl(
            cluster,
            "get",
            "--consistency=s",
            "--print-value-only",
            f"/orch/v1/services/{steady}",
            endpoints=endpoint,
        )
        return bool(raw) and int(json.loads(raw)["spec"]["replicas"]) == 3  # uint64: "3"

    wait_until(has_scale, 20, what=f"member {victim} to catch up")
    health = etcdctl(cluster, "endpoint", "health", "-w", "json")
    assert [h["health"] for h in json.loads(health)] == [True, True, True]
    orch("scale", f"{steady}=2")
    wait_until(lambda: len(orch.running(steady)) == 2, 30, what="back to 2 running")


def test_quorum_loss_fails_writes_in_bounded_time_and_the_cluster_recovers_by_itself(
    orch, cluster, steady, tmp_path: Path
) -> None:
    before = ids(orch.running(steady))
    held = containers(cluster)
    assert before == set().union(*held.values())
    leader = asyncio.run(cluster.etcd_leader())
    assert leader is not None, "no etcd leader"
    victims = [leader, (leader + 1) % 3]
    leading = wait_until(lambda: manager_leader(cluster), 10, what="a leading manager")
    log = Path(cluster.state_dir) / "logs" / f"manager-{int(leading.rsplit('-m', 1)[1])}.log"
    log_before = log.stat().st_size  # only what the leader logs after the kill counts
    # From the kill until the members are back, the same containers run on every host.
    with Sampler(lambda: containers(cluster), 0.2, "the containers on each host") as outage:
        for i in victims:
            asyncio.run(cluster.stop_etcd_member(i, crash=True))

        # Writes: one clear line, from the first manager only, after the Store timeout.
        for args in (
            ["scale", f"{steady}=3"],
            ["apply", "-f", str(manifest(cluster, tmp_path, steady, 3))],
        ):
            took, res = timed(orch, *args)
            assert res.returncode == 1, f"orch {' '.join(args)}: {res.stdout}"
            assert res.stderr.startswith(UNAVAILABLE), res.stderr
            assert len(res.stderr.splitlines()) == 1, res.stderr
            assert took > STORE_TIMEOUT - 1, f"orch {args[0]} failed before the timeout"
        # The bound is the manager's: its answer, timed without the CLI's start-up.
        took, err = rpc_timed(cluster, "Scale", control_pb2.ScaleRequest(replicas={steady: 3}))
        assert err.startswith(UNAVAILABLE.removeprefix("orch: ")), err
        assert STORE_TIMEOUT - 1 < took < STORE_TIMEOUT + 1.5, f"the manager took {took:.1f}s"

        # Reads answer from the managers' views at once; `orch managers` cannot say who leads.
        res = orch("ps", steady, "-o", "json", check=False)
        assert res.returncode == 0, res.stderr
        assert {t["id"] for t in json.loads(res.stdout) if t["state"] == "running"} == before
        took, err = rpc_timed(cluster, "ListTasks", control_pb2.ListTasksRequest(service=steady))
        assert (err, took < 1.0) == ("", True), f"ListTasks: {err!r} after {took:.1f}s"
        res = orch("managers", "-o", "json", check=False)
        assert res.returncode == 0, res.stderr
        assert not [m for m in json.loads(res.stdout) if m["leader"]]
        took, err = rpc_timed(cluster, "ListManagers", control_pb2.ListManagersRequest())
        assert (err, took < STORE_TIMEOUT + 1.5) == ("", True), f"{err!r} after {took:.1f}s"

        # The leading manager gives up (its keep-alives go unanswered) and no one can lead:
        # its own log, from the kill on.
        def stepped_down() -> bool:
            with log.open("rb") as f:
                f.seek(log_before)
                return b"stepping down" in f.read()

        wait_until(stepped_down, 20, 0.5, what=f"the leading manager {leading} to step down")

        for i in victims:
            asyncio.run(cluster.start_etcd_member(i))
    # All the while the containers ran on, the same ones.
    outage.assert_all(lambda now: now == held, "the same containers on every host")
    wait_until(lambda: manager_leader(cluster), 20, what="a leading manager again")
    wait_until(lambda: all_ready(orch), 30, what="every node ready")
    took, res = timed(orch, "scale", f"{steady}=3")
    assert res.returncode == 0, res.stderr
    running = wait_until(lambda: len(r := orch.running(steady)) == 3 and r, 30, what="3 running")
    assert before <= ids(running), "a task was replaced because of the outage"
    assert not [t for t in orch.tasks(steady, all=True) if t["state"] == "orphaned"]
    assert all_ready(orch)
    now = containers(cluster)
    for host, old in held.items():
        assert old <= now[host], f"{host}: containers were replaced"
    # No manager exited on the way: each is still the process the cluster started.
    for i in range(len(cluster.managers)):
        assert os.path.exists(f"/proc/{cluster.record.pids[f'manager-{i}']}"), f"manager {i}"
