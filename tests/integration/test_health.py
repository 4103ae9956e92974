"""Health checks on a real 2-host cluster (issue 4, part 1).

Three services, each probed by the agent of the host it runs on:
- ``hweb`` (2 replicas on the bridge network, http probe of /health): replica 2 deletes
  its health file 3 s after it starts, so it turns HEALTHY, then UNHEALTHY; the agent
  stops it and reports it FAILED, and the orchestrator replaces it per the restart policy.
  `orch ps -a` shows the health and, in the slot's history, "unhealthy" as the reason.
- ``htcp`` (a tcp probe of an address on an overlay network: reachable from the host's
  netns through the network's bridge) and ``hexec`` (an exec probe through `runc exec`,
  healthy only once the file it tests exists) turn HEALTHY and stay so: a sampler watches
  them, and hweb's healthy replica 1, from then to the end of the test.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from tests_support import Sampler, wait_until

from orch.cli.client import ControlClient
from orch.proto import control_pb2, types_pb2

pytestmark = pytest.mark.integration

CLUSTER_NODES = 2

MANIFEST = """
apiVersion: orch/v1
kind: Network
metadata: {name: hnet}
spec: {driver: overlay}
---
apiVersion: orch/v1
kind: Service
metadata: {name: hweb}
spec:
  image: REGISTRY/busybox:latest
  command:
    - sh
    - -c
    - >-
      mkdir -p /www && echo ok > /www/health &&
      if [ "$ORCH_SLOT" = 2 ]; then (sleep 3; rm /www/health) & fi;
      exec httpd -f -p 80 -h /www
  replicas: 2
  healthcheck: {http: {port: 80, path: /health}, interval: 500ms, timeout: 2s, retries: 2}
  restart_policy: {condition: on-failure, delay: 1s}
  stop_grace_period: 200ms
---
apiVersion: orch/v1
kind: Service
metadata: {name: htcp}
spec:
  image: REGISTRY/busybox:latest
  command: [httpd, -f, -p, "7000", -h, /tmp]
  networks: [hnet]
  healthcheck: {tcp: {port: 7000}, interval: 500ms, timeout: 2s}
  stop_grace_period: 200ms
---
apiVersion: orch/v1
kind: Service
metadata: {name: hexec}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'sleep 1; touch /tmp/ready; exec sleep 100000']
  healthcheck: {exec: test -f /tmp/ready, interval: 500ms, timeout: 2s, retries: 3}
  stop_grace_period: 200ms
"""


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def table_cells(table: str, task_id: str) -> dict[str, str]:
    """The cells of a task's row in an `orch ps` table, by header (columns are left-aligned
    at the header's offset)."""
    header, *rows = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    row = next(r for r in rows if r.startswith(task_id[:12]))
    bounds = [*starts[1:], None]
    return {n: row[s:e].strip() for n, s, e in zip(names, starts, bounds, strict=True)}


def test_unhealthy_task_is_replaced_and_ps_says_why(orch, cluster, tmp_path: Path) -> None:
    path = tmp_path / "health.yaml"
    path.write_text(MANIFEST.replace("REGISTRY", cluster.record.registry))
    applied = time.monotonic()
    orch("apply", "-f", str(path))
    try:
        check(orch, cluster, applied)
    finally:
        for name in ("hweb", "htcp", "hexec"):
            orch("rm", name, check=False)
        wait_until(lambda: not orch.tasks(all=True), 60, 0.2, "the services' tasks to go")
        orch("network", "rm", "hnet", check=False)


def healthy_ids(client: ControlClient) -> tuple[set[str], set[str], set[str]]:
    """The healthy running tasks of htcp, of hexec and of hweb's slot 1 (one Control API
    call: cheap enough to sample every 0.1 s beside the test's own CLI calls)."""
    tasks = client.call("ListTasks", control_pb2.ListTasksRequest()).tasks
    ok = [
        t
        for t in tasks
        if t.status.state == types_pb2.RUNNING and t.status.health == types_pb2.HEALTH_HEALTHY
    ]
    return (
        {t.id for t in ok if t.service_name == "htcp"},
        {t.id for t in ok if t.service_name == "hexec"},
        {t.id for t in ok if t.service_name == "hweb" and t.slot == 1},
    )


def check(orch, cluster, applied: float) -> None:
    def healthy(name: str) -> list[dict]:
        return [t for t in orch.running(name) if t["health"] == "healthy"]

    # Every service reaches HEALTHY (the first probe comes one interval after the start).
    wait_until(lambda: len(healthy("htcp")) == 1 and len(healthy("hexec")) == 1, 90, 0.2,
               "htcp and hexec to be healthy")  # fmt: skip
    slot1 = wait_until(
        lambda: [t for t in healthy("hweb") if t["slot"] == 1], 90, 0.2, "hweb.1 healthy"
    )[0]
    print(f"\nhealthy after {time.monotonic() - applied:.1f}s from apply")
    with ControlClient(cluster.managers, tls=cluster.tls()) as client:
        steady = healthy_ids(client)
        assert all(len(ids) == 1 for ids in steady), steady
        assert steady[2] == {slot1["id"]}
        # From here to the end htcp, hexec and hweb.1 stay the same healthy tasks.
        with Sampler(lambda: healthy_ids(client), 0.1, "healthy htcp, hexec, hweb.1") as s:
            check_slot2(orch, slot1)
        s.assert_all(lambda ids: ids == steady, "htcp, hexec and hweb.1 stay healthy")


def check_slot2(orch, slot1: dict) -> None:
    # Replica 2 turns unhealthy 3 s after its start: FAILED, health and reason unhealthy.
    def failed_slot2() -> dict | None:
        return next(
            (t for t in orch.tasks("hweb", all=True) if t["slot"] == 2 and t["state"] == "failed"),
            None,
        )

    failed = wait_until(failed_slot2, 90, 0.2, "hweb.2 to fail its health check")
    address = failed["addresses"][0].split("/")[0]
    assert failed["health"] == "unhealthy" and failed["reason"] == "unhealthy", failed
    assert failed["error"] == (
        "unhealthy: 2 consecutive http probe failures "
        f"(last: GET http://{address}:80/health -> 404)"
    ), failed
    print(f"hweb.2 failed {seconds(failed['state_since']) - seconds(failed['created_at']):.1f}s "
          "after it was created (health file removed 3s after start)")  # fmt: skip

    # The orchestrator replaces it (restart policy on-failure, delay 1s); the new task
    # runs (healthy at first: it too removes its file after 3 s, so the slot keeps cycling).
    def replacement() -> dict | None:
        tasks = orch.tasks("hweb", all=True)
        newer = [
            t for t in tasks
            if t["slot"] == 2 and t["restart_count"] > failed["restart_count"]
            and t["state"] == "running"
        ]  # fmt: skip
        return newer[0] if newer else None

    new = wait_until(replacement, 60, 0.2, "a replacement of hweb.2 to run")
    print(f"replacement ran {seconds(new['state_since']) - seconds(failed['state_since']):.1f}s "
          "after the failure (restart delay 1s)")  # fmt: skip

    # The healthy replica was never touched (the sampler in check() watches it throughout).
    assert [t["id"] for t in orch.tasks("hweb") if t["slot"] == 1] == [slot1["id"]]

    # `orch ps -a` as a person reads it: HEALTH and REASON columns.
    table = orch("ps", "-a", "hweb").stdout
    print(table)
    row = table_cells(table, failed["id"])
    assert (row["NAME"], row["STATE"].split()[0], row["HEALTH"], row["REASON"]) == (
        "\\_ hweb.2",
        "failed",
        "unhealthy",
        "unhealthy",
    ), row
    assert row["ERROR"].startswith("unhealthy: 2 consecutive http probe failures")
    assert table_cells(table, slot1["id"])["HEALTH"] == "healthy"


BAD = """apiVersion: orch/v1
kind: Service
metadata: {name: bad}
spec:
  image: REGISTRY/busybox:latest
  healthcheck:
    http: {port: 80, path: /health}
    interval: 0s
---
apiVersion: orch/v1
kind: Service
metadata: {name: worse}
spec:
  image: REGISTRY/busybox:latest
  healthcheck:
    grpc: {port: 50051}
"""


def test_bad_health_checks_are_refused_with_file_and_line(orch, cluster, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD.replace("REGISTRY", cluster.record.registry))
    res = orch("apply", "-f", str(path), check=False)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        f"orch: {path}:8: spec.healthcheck.interval: expected at least 100ms, got 0s "
        '(accepted: a duration like "100ms", "5s", "1m30s", "2h", or a number of seconds; '
        "default 30s)",
        f"orch: {path}:16: spec.healthcheck.grpc: unknown probe type 'grpc' (accepted: a probe: "
        "exec, http, tcp; and the settings interval, timeout, retries, start_period)",
    ], res.stderr
    assert not [s for s in orch.json("ls") if s["name"] in ("bad", "worse")]
