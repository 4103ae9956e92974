"""The spine end to end on real parts: manifest -> CLI -> manager (etcd) -> agent -> runc.

One local cluster (etcd, registry, manager, one host with its agent) serves the whole
module; each test cleans up the services it made. Assertions read the real thing: runc's
own list, the kernel's mount table (hosts share the mount namespace), the page the
container serves, fetched from inside the host's netns (the root netns cannot reach a
host's container bridge).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests_support import ControlProbe, fetch_from, holds_for, wait_until

from orch.identity import channels
from orch.proto import types_pb2

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "web.yaml"


def web_manifest(tmp_path: Path, registry: str, replicas: int = 3) -> Path:
    """The example web.yaml, pointed at this cluster's registry, with a short grace."""
    text = EXAMPLE.read_text().replace("127.0.0.1:5055", registry)
    text = text.replace("replicas: 3", f"replicas: {replicas}")
    text = text.replace("stop_grace_period: 5s", "stop_grace_period: 1s")
    path = tmp_path / "web.yaml"
    path.write_text(text)
    return path


def runc_ids(cluster) -> set[str]:
    root = cluster.record.agents[0]["runc_root"]
    out = subprocess.run(
        ["runc", "--root", root, "list", "--format", "json"], capture_output=True, text=True
    ).stdout
    return {c["id"] for c in json.loads(out or "null") or [] if c["status"] == "running"}


def overlay_mounts(cluster) -> set[str]:
    state = cluster.record.agents[0]["state_dir"]
    with open("/proc/mounts") as f:
        return {line.split()[1] for line in f if line.split()[2] == "overlay" and state in line}


def fetch(cluster, task: dict, address: str) -> str:
    """The page at http://<address>/, fetched on the host that runs ``task``."""
    return fetch_from(cluster, task["node_hostname"], f"http://{address}/")


@pytest.fixture
def web(orch, cluster, tmp_path):
    path = web_manifest(tmp_path, cluster.record.registry)
    orch("apply", "-f", str(path))
    yield path
    orch("rm", "web", check=False)
    # The next test starts clean: every task of web is stopped and deleted.
    wait_until(lambda: not orch.tasks_left("web"), 30)


def _exists(orch, name: str) -> bool:
    return any(s["name"] == name for s in orch.json("ls"))


def test_apply_scale_up_down_and_remove(orch, cluster, web) -> None:
    running = wait_until(lambda: len(orch.running("web")) == 3 and orch.running("web"), 60)
    # Each replica is a runc container serving a page that names its task.
    assert {t["id"] for t in running} <= runc_ids(cluster)
    for t in running:
        page = fetch(cluster, t, t["addresses"][0].split("/")[0])
        assert f"web.{t['slot']} task {t['id']}" in page

    orch("scale", "web=5")
    running = wait_until(lambda: len(orch.running("web")) == 5 and orch.running("web"), 60)
    assert {t["slot"] for t in running} == {1, 2, 3, 4, 5}

    orch("scale", "web=1")
    wait_until(lambda: len(orch.running("web")) == 1, 30)
    keep = orch.running("web")[0]["id"]
    # Four stopped and removed: runc and the mount table agree.
    wait_until(lambda: runc_ids(cluster) == {keep}, 30, what="runc to list only the kept task")
    wait_until(lambda: len(overlay_mounts(cluster)) == 1, 30, what="one rootfs mount left")

    orch("rm", "web")
    wait_until(lambda: not runc_ids(cluster) and not overlay_mounts(cluster), 30)
    assert not _exists(orch, "web")


def test_failing_container_restarts_per_policy_and_shows_exit_code(orch, cluster, tmp_path) -> None:
    manifest = tmp_path / "flaky.yaml"
    manifest.write_text(
        f"""
apiVersion: orch/v1
kind: Service
metadata: {{name: flaky}}
spec:
  image: {cluster.record.registry}/busybox:latest
  command: [sh, -c, 'echo run $ORCH_TASK_ID; echo trouble >&2; exit 3']
  restart_policy: {{condition: on-failure, delay: 100ms, max_attempts: 2, max_delay: 200ms}}
"""
    )
    orch("apply", "-f", str(manifest))
    try:
        # First run plus two restarts, all failed with exit code 3, then no more.
        tasks = wait_until(
            lambda: (
                (t := orch.tasks("flaky", all=True))
                and len(t) == 3
                and all(x["state"] == "failed" for x in t)
                and t
            ),
            30,
        )
        assert {t["exit_code"] for t in tasks} == {3}
        assert all("exit code 3" in t["error"] for t in tasks)
        assert max(t["restart_count"] for t in tasks) == 2
        table = orch("ps", "-a", "flaky").stdout
        assert "exit code 3" in table

        logs = orch("logs", "flaky")
        for t in tasks:
            assert f"run {t['id']}" in logs.stdout
        assert "trouble" in logs.stderr
    finally:
        orch("rm", "flaky")


def test_logs_of_a_service_show_every_replica(orch, cluster, tmp_path) -> None:
    manifest = tmp_path / "talk.yaml"
    manifest.write_text(
        f"""
apiVersion: orch/v1
kind: Service
metadata: {{name: talk}}
spec:
  image: {cluster.record.registry}/busybox:latest
  command: [sh, -c, 'for i in 1 2 3; do echo "line $i from $ORCH_SLOT"; done; exec sleep 1000']
  replicas: 2
  stop_grace_period: 100ms
"""
    )
    orch("apply", "-f", str(manifest))
    try:
        wait_until(lambda: len(orch.running("talk")) == 2, 60)
        out = wait_until(lambda: (o := orch("logs", "talk").stdout).count("line 3") == 2 and o, 20)
        assert "talk.1@node1 | line 1 from 1" in out
        assert "talk.2@node1 | line 3 from 2" in out
        tail = orch("logs", "talk.1", "--tail", "1").stdout.strip().splitlines()
        assert tail == ["talk.1@node1 | line 3 from 1"]
    finally:
        orch("rm", "talk")


def test_missing_image_fails_with_pull_error_and_no_hang(orch, cluster, tmp_path) -> None:
    manifest = tmp_path / "ghost.yaml"
    manifest.write_text(
        f"""
apiVersion: orch/v1
kind: Service
metadata: {{name: ghost}}
spec:
  image: {cluster.record.registry}/no-such-image:latest
  restart_policy: {{condition: none}}
"""
    )
    orch("apply", "-f", str(manifest))
    try:
        task = wait_until(
            lambda: (t := orch.tasks("ghost", all=True)) and t[0]["state"] == "rejected" and t[0],
            30,
        )
        assert "no-such-image" in task["error"]
        assert "rejected" in orch("ps", "ghost").stdout
    finally:
        orch("rm", "ghost")


def test_task_that_fits_nowhere_stays_pending_with_the_reason(orch, cluster, tmp_path) -> None:
    manifest = tmp_path / "huge.yaml"
    manifest.write_text(
        f"""
apiVersion: orch/v1
kind: Service
metadata: {{name: huge}}
spec:
  image: {cluster.record.registry}/busybox:latest
  resources:
    reservations: {{memory: 100Ti}}
"""
    )
    orch("apply", "-f", str(manifest))
    try:
        task = wait_until(
            lambda: (t := orch.tasks("huge")) and t[0]["error"] and t[0], 20, what="a reason"
        )
        assert task["state"] == "pending" and not task["node"]
        assert "insufficient memory" in task["error"], task["error"]
        assert "insufficient memory" in orch("ps", "huge").stdout
        # And stays so: the same task, unplaced, through several scheduling passes.
        with ControlProbe(cluster) as api:
            holds_for(
                lambda: (
                    [
                        (t.id, t.status.state, t.node_id, "insufficient memory" in t.status.err)
                        for t in api.tasks("huge")
                    ]
                    == [(task["id"], types_pb2.PENDING, "", True)]
                ),
                3,
                0.05,
                "huge pending with its reason",
            )
    finally:
        orch("rm", "huge")


def test_manager_serves_grpc_health_and_reflection(cluster) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with channels.channel(cluster.managers[0], cluster.tls()) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert {"orch.v1.Control", "orch.v1.Dispatcher", "grpc.health.v1.Health"} <= names


def test_host_and_none_network_modes(orch, cluster, tmp_path) -> None:
    from orch.localcluster.cluster import free_port

    port = free_port()
    manifest = tmp_path / "modes.yaml"
    manifest.write_text(
        f"""
apiVersion: orch/v1
kind: Service
metadata: {{name: hostnet}}
spec:
  image: {cluster.record.registry}/busybox:latest
  command: [sh, -c, 'mkdir -p /www && echo host-mode > /www/index.html && exec httpd -f -p {port} -h /www']
  networks: [host]
  stop_grace_period: 100ms
---
apiVersion: orch/v1
kind: Service
metadata: {{name: nonet}}
spec:
  image: {cluster.record.registry}/busybox:latest
  command: [sh, -c, 'ls /sys/class/net; exec sleep 1000']
  networks: [none]
  stop_grace_period: 100ms
"""
    )
    orch("apply", "-f", str(manifest))
    try:
        wait_until(
            lambda: len(orch.running("hostnet")) == 1 and len(orch.running("nonet")) == 1, 60
        )
        # host: the container shares the node's network namespace (its host netns).
        task = orch.running("hostnet")[0]
        page = wait_until(lambda: _try_fetch(cluster, task, f"127.0.0.1:{port}"), 10)
        assert page == "host-mode\n"
        # none: its own namespace with nothing but loopback, and no address to show.
        assert orch.running("nonet")[0]["addresses"] == []
        out = wait_until(lambda: orch("logs", "nonet").stdout, 10)
        assert out.split("|", 1)[1].split() == ["lo"], out
    finally:
        orch("rm", "hostnet", "nonet")


def _try_fetch(cluster, task: dict, address: str) -> str | None:
    try:
        return fetch(cluster, task, address)
    except OSError:
        return None


def test_version_names_the_client_and_the_cluster(orch) -> None:
    record = orch.json("version")
    assert record["client"]["version"] == record["cluster"]["version"] != "unknown"
    assert record["cluster"]["manager"] in orch.cluster.managers
