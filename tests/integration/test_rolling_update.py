"""Rolling updates on a real 3-host cluster (issue 6, part 1).

A 6-replica service on an overlay network answers http and is probed by an http health
check. An update (a new env value, so new tasks) runs through `orch apply`, which follows
it until it ends; a sampler (tests_support.Sampler: its own failure or stall fails the
test) reads, all along, the replicas answering in DNS (the A records node1's resolver gives
for `roll`) and the healthy RUNNING tasks the Control API lists. A DNS query with no reply
is not a count of 0: it is counted apart, and most samples must have one.

- start-first, parallelism 2: never fewer than 6 healthy;
- stop-first, parallelism 2: never fewer than 4;
- an update whose health check fails (a path that answers 404) with failure_action
  rollback: `orch apply` exits 1, the service ends on the old spec, 6 healthy;
- `orch rollback` after a completed update returns to the previous spec.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import Sampler, dns_answer, wait_until

from orch.cli.client import ControlClient
from orch.localcluster.cluster import LocalCluster
from orch.proto import control_pb2, types_pb2

pytestmark = pytest.mark.integration

CLUSTER_NODES = 3

SERVICE = """
apiVersion: orch/v1
kind: Network
metadata: {name: rollnet}
spec: {driver: overlay}
---
apiVersion: orch/v1
kind: Service
metadata: {name: roll}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'mkdir -p /www && echo $VERSION > /www/health && exec httpd -f -p 80 -h /www']
  env: {VERSION: "@VER@"}
  replicas: 6
  networks: [rollnet]
  healthcheck: {http: {port: 80, path: @HEALTH@}, interval: 200ms, timeout: 1s, retries: 2}
  stop_grace_period: 200ms
  update: {parallelism: 2, order: @ORDER@, monitor: 1s, failure_action: rollback}
  rollback: {parallelism: 2, order: @ORDER@, monitor: 1s}
"""


def manifest(cluster, tmp_path: Path, *, version: str, order: str, health: str = "/health") -> Path:
    text = (
        SERVICE.replace("REGISTRY", cluster.record.registry)
        .replace("@VER@", version)
        .replace("@ORDER@", order)
        .replace("@HEALTH@", health)
    )
    path = tmp_path / f"roll-{version}-{order}.yaml"
    path.write_text(text)
    return path


class Counts:
    """Counts the replicas of a service answering in DNS (at ``resolver``, a node's
    listener, which answers for every network of its node) and its healthy RUNNING tasks
    through the Control API; ``sample()`` is a Sampler's probe."""

    def __init__(self, cluster: LocalCluster, service: str, resolver: str = "") -> None:
        self.client = ControlClient(cluster.managers, tls=cluster.tls())
        self.service = service
        self.resolver = resolver

    def healthy(self) -> list:
        request = control_pb2.ListTasksRequest(service=self.service)
        return [
            t
            for t in self.client.call("ListTasks", request).tasks
            if t.desired_state == types_pb2.RUNNING
            and t.status.state == types_pb2.RUNNING
            and t.status.health == types_pb2.HEALTH_HEALTHY
        ]

    def answering(self) -> int | None:
        """Addresses DNS answers for the service; None when 3 queries got no reply."""
        for _ in range(3):
            if (found := dns_answer(self.resolver, self.service, timeout=0.5)) is not None:
                return len(found)
        return None

    def sample(self) -> tuple[int, int | None]:
        """(healthy tasks, addresses answered or None)."""
        return len(self.healthy()), self.answering() if self.resolver else None

    def __enter__(self) -> Counts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()


def watch(counts: Counts) -> Sampler:
    return Sampler(counts.sample, 0.02, f"{counts.service}: healthy tasks and DNS answers")


def assert_floor(sampler: Sampler, floor: int, dns: bool = True) -> None:
    """Every sample (the whole rollout) at or above ``floor``, in the store and in DNS."""
    samples = sampler.values
    print(f"{len(samples)} samples; min healthy {min(h for h, _ in samples)}")
    assert len(samples) > 20
    sampler.assert_all(lambda v: v[0] >= floor, f"healthy tasks >= {floor}")
    if not dns:
        return
    answered = [n for _, n in samples if n is not None]
    assert len(answered) >= 0.9 * len(samples), f"DNS replied to {len(answered)}/{len(samples)}"
    sampler.assert_all(lambda v: v[1] is None or v[1] >= floor, f"DNS answers >= {floor}")


def resolver(cluster) -> str:
    """node1's DNS listener (its underlay address), reachable from this netns."""
    return cluster.host("node1")["address"]


def env_of(task) -> str:
    return next(e for e in task.container.env if e.startswith("VERSION="))


@pytest.fixture
def deployed(orch) -> Iterator[None]:
    """Removes the test's service afterwards, and waits for its tasks to go."""
    try:
        yield
    finally:
        orch("rm", "roll", check=False)
        wait_until(
            lambda: not orch.tasks_left("roll"),
            60, 0.2, "roll's tasks to go",
        )  # fmt: skip
        orch("network", "rm", "rollnet", check=False)


def start(orch, cluster, tmp_path: Path, order: str) -> None:
    res = orch("apply", "-f", str(manifest(cluster, tmp_path, version="1", order=order)))
    assert "service/roll created" in res.stdout
    with Counts(cluster, "roll") as s:
        wait_until(lambda: len(s.healthy()) == 6, 120, 0.2, "6 healthy replicas of roll")


@pytest.mark.parametrize(("order", "floor"), [("start-first", 6), ("stop-first", 4)])
def test_update_keeps_the_floor(orch, cluster, tmp_path, deployed, order: str, floor: int) -> None:
    start(orch, cluster, tmp_path, order)
    path = manifest(cluster, tmp_path, version="2", order=order)
    began = time.monotonic()
    with Counts(cluster, "roll", resolver(cluster)) as counts, watch(counts) as sampler:
        res = orch("apply", "-f", str(path), timeout=180)
    took = time.monotonic() - began
    print(f"\n{order}: rollout took {took:.1f}s\n{res.stdout}")
    assert res.returncode == 0, res.stderr
    assert "service/roll configured (container.env)" in res.stdout.splitlines()
    assert res.stdout.splitlines()[-1].startswith("roll: 6/6 updated")
    assert "completed" in res.stdout.splitlines()[-1]
    assert_floor(sampler, floor)
    with Counts(cluster, "roll") as s:
        tasks = s.healthy()
    assert sorted(env_of(t) for t in tasks) == ["VERSION=2"] * 6
    status = orch("rollout", "status", "roll")
    assert status.returncode == 0 and "completed" in status.stdout, status.stdout


def test_failing_health_check_rolls_back(orch, cluster, tmp_path, deployed) -> None:
    start(orch, cluster, tmp_path, "start-first")
    bad = manifest(cluster, tmp_path, version="2", order="start-first", health="/missing")
    with Counts(cluster, "roll", resolver(cluster)) as counts, watch(counts) as sampler:
        res = orch("apply", "-f", str(bad), check=False, timeout=180)
    print(f"\n{res.stdout}{res.stderr}")
    assert res.returncode == 1
    assert "roll: rollback completed: rollback completed (update failed:" in res.stderr
    assert_floor(sampler, 6)
    info = orch.json("rollout", "status", "roll")
    assert info["state"] == "rollback completed" and "unhealthy" in info["message"], info
    with Counts(cluster, "roll") as s:
        wait_until(lambda: len(s.healthy()) == 6, 60, 0.2, "6 healthy replicas after rollback")
        assert sorted(env_of(t) for t in s.healthy()) == ["VERSION=1"] * 6
        spec = s.client.call("GetService", control_pb2.GetServiceRequest(name="roll")).service
    assert spec.spec.container.healthcheck.http.path == "/health"
    assert spec.previous_spec.container.healthcheck.http.path == "/missing"


def test_orch_rollback_returns_to_the_previous_spec(orch, cluster, tmp_path, deployed) -> None:
    start(orch, cluster, tmp_path, "stop-first")
    orch("apply", "-f", str(manifest(cluster, tmp_path, version="2", order="stop-first")),
         timeout=180)  # fmt: skip
    with Counts(cluster, "roll") as counts, watch(counts) as sampler:
        res = orch("rollback", "roll", timeout=180)
    assert res.stdout.splitlines()[0] == "service/roll rolling back"
    assert "rollback completed" in res.stdout.splitlines()[-1]
    assert_floor(sampler, 4, dns=False)
    with Counts(cluster, "roll") as s:
        assert sorted(env_of(t) for t in s.healthy()) == ["VERSION=1"] * 6
    again = orch("rollback", "roll", "--detach")  # back to 2: a rollback rolls back too
    assert again.returncode == 0
