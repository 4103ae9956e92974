"""Rolling updates on a real 3-host cluster (issue 6, part 1).

A 6-replica service on an overlay network answers http and is probed by an http health
check. An update (a new env value, so new tasks) runs through `orch apply`, which follows
it until it ends; a thread samples, all along, the replicas answering in DNS (the A records
node1's resolver gives for `roll`) and the healthy RUNNING tasks the Control API lists.

- start-first, parallelism 2: never fewer than 6 healthy;
- stop-first, parallelism 2: never fewer than 4;
- an update whose health check fails (a path that answers 404) with failure_action
  rollback: `orch apply` exits 1, the service ends on the old spec, 6 healthy;
- `orch rollback` after a completed update returns to the previous spec.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import dns_query, wait_until

from orch.cli.client import ControlClient
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


class Sampler:
    """Counts, in a thread, the replicas of a service answering in DNS (at ``resolver``,
    a node's listener, which answers for every network of its node) and its healthy
    RUNNING tasks through the Control API."""

    def __init__(self, managers: list[str], service: str, resolver: str = "") -> None:
        self.client = ControlClient(managers)
        self.service = service
        self.resolver = resolver
        self.samples: list[int] = []
        self.dns_samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def healthy(self) -> list:
        request = control_pb2.ListTasksRequest(service=self.service)
        return [
            t
            for t in self.client.call("ListTasks", request).tasks
            if t.desired_state == types_pb2.RUNNING
            and t.status.state == types_pb2.RUNNING
            and t.status.health == types_pb2.HEALTH_HEALTHY
        ]

    def answering(self) -> int:
        """Addresses DNS answers for the service (a lost datagram is asked again)."""
        for _ in range(3):
            if found := dns_query(self.resolver, self.service):
                return len(found)
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(len(self.healthy()))
            if self.resolver:
                self.dns_samples.append(self.answering())
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()


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
    with Sampler(cluster.managers, "roll") as s:
        wait_until(lambda: len(s.healthy()) == 6, 120, 0.2, "6 healthy replicas of roll")


@pytest.mark.parametrize(("order", "floor"), [("start-first", 6), ("stop-first", 4)])
def test_update_keeps_the_floor(orch, cluster, tmp_path, deployed, order: str, floor: int) -> None:
    start(orch, cluster, tmp_path, order)
    path = manifest(cluster, tmp_path, version="2", order=order)
    began = time.monotonic()
    with Sampler(cluster.managers, "roll", resolver(cluster)) as sampler:
        res = orch("apply", "-f", str(path), timeout=180)
    took = time.monotonic() - began
    print(f"\n{order}: rollout took {took:.1f}s; {len(sampler.samples)} samples, "
          f"min healthy {min(sampler.samples)}\n{res.stdout}")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "service/roll configured (container.env)" in res.stdout.splitlines()
    assert res.stdout.splitlines()[-1].startswith("roll: 6/6 updated")
    assert "completed" in res.stdout.splitlines()[-1]
    assert len(sampler.samples) > 20
    assert min(sampler.samples) >= floor, sampler.samples
    assert len(sampler.dns_samples) > 20
    assert min(sampler.dns_samples) >= floor, sampler.dns_samples
    with Sampler(cluster.managers, "roll") as s:
        tasks = s.healthy()
    assert sorted(env_of(t) for t in tasks) == ["VERSION=2"] * 6
    status = orch("rollout", "status", "roll")
    assert status.returncode == 0 and "completed" in status.stdout, status.stdout


def test_failing_health_check_rolls_back(orch, cluster, tmp_path, deployed) -> None:
    start(orch, cluster, tmp_path, "start-first")
    bad = manifest(cluster, tmp_path, version="2", order="start-first", health="/missing")
    with Sampler(cluster.managers, "roll", resolver(cluster)) as sampler:
        res = orch("apply", "-f", str(bad), check=False, timeout=180)
    print(f"\n{res.stdout}{res.stderr}")
    assert res.returncode == 1
    assert "roll: rollback completed: rollback completed (update failed:" in res.stderr
    assert min(sampler.samples) == 6, sampler.samples
    assert min(sampler.dns_samples) == 6, sampler.dns_samples
    info = orch.json("rollout", "status", "roll")
    assert info["state"] == "rollback completed" and "unhealthy" in info["message"], info
    with Sampler(cluster.managers, "roll") as s:
        wait_until(lambda: len(s.healthy()) == 6, 60, 0.2, "6 healthy replicas after rollback")
        assert sorted(env_of(t) for t in s.healthy()) == ["VERSION=1"] * 6
        spec = s.client.call("GetService", control_pb2.GetServiceRequest(name="roll")).service
    assert spec.spec.container.healthcheck.http.path == "/health"
    assert spec.previous_spec.container.healthcheck.http.path == "/missing"


def test_orch_rollback_returns_to_the_previous_spec(orch, cluster, tmp_path, deployed) -> None:
    start(orch, cluster, tmp_path, "stop-first")
    orch("apply", "-f", str(manifest(cluster, tmp_path, version="2", order="stop-first")),
         timeout=180)  # fmt: skip
    with Sampler(cluster.managers, "roll") as sampler:
        res = orch("rollback", "roll", timeout=180)
    assert res.stdout.splitlines()[0] == "service/roll rolling back"
    assert "rollback completed" in res.stdout.splitlines()[-1]
    assert min(sampler.samples) >= 4
    with Sampler(cluster.managers, "roll") as s:
        assert sorted(env_of(t) for t in s.healthy()) == ["VERSION=1"] * 6
    again = orch("rollback", "roll", "--detach")  # back to 2: a rollback rolls back too
    assert again.returncode == 0
