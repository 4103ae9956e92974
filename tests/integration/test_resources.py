"""Resources on a real cluster (issue 6, part 4): limits are enforced through each
container's cgroup (memory, cpu quota, pids), and a container that goes past its memory
limit is killed by the kernel and shows as OOM killed in `orch ps`.

The limits are read back from the cgroup files the runtime made (v1 or v2, whichever the
host has), not from our own records; the OOM kill is a real one: `tail /dev/zero` buffers
an endless line until the memory cgroup kills it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import wait_until

from orch.runtime import cgroups

pytestmark = pytest.mark.integration

CLUSTER_NODES = 1

MANIFEST = """
apiVersion: orch/v1
kind: Service
metadata: {name: capped}
spec:
  image: REGISTRY/busybox:latest
  command: [sleep, "100000"]
  resources:
    limits: {memory: 32Mi, cpus: 0.5, pids: 64}
  stop_grace_period: 100ms
---
apiVersion: orch/v1
kind: Service
metadata: {name: hog}
spec:
  image: REGISTRY/busybox:latest
  command: [tail, /dev/zero]
  resources:
    limits: {memory: 16Mi}
  restart_policy: {condition: none}
  stop_grace_period: 100ms
"""


def cgroup_value(cgroup_path: str, v1: tuple[str, str], v2: str) -> str:
    """A cgroup file of the container: v1 <controller>/<path>/<file>, else v2 <path>/<file>."""
    rel = cgroup_path.lstrip("/")
    if cgroups.is_unified():
        return (cgroups.CGROUP_ROOT / rel / v2).read_text().strip()
    controller, name = v1
    return (cgroups.CGROUP_ROOT / controller / rel / name).read_text().strip()


def test_limits_are_enforced_and_a_memory_hog_is_oom_killed(orch, cluster, tmp_path) -> None:
    path = tmp_path / "res.yaml"
    path.write_text(MANIFEST.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(Path(path)))
    try:
        (task,) = wait_until(lambda: orch.running("capped"), 60, what="capped running")
        cgroup = f"/{cluster.host('node1')['cgroup']}/{task['id']}"
        memory = cgroup_value(cgroup, ("memory", "memory.limit_in_bytes"), "memory.max")
        assert int(memory) == 32 << 20
        pids = cgroup_value(cgroup, ("pids", "pids.max"), "pids.max")
        assert pids == "64"
        if cgroups.is_unified():
            quota, period = cgroup_value(cgroup, ("", ""), "cpu.max").split()
        else:
            quota = cgroup_value(cgroup, ("cpu", "cpu.cfs_quota_us"), "")
            period = cgroup_value(cgroup, ("cpu", "cpu.cfs_period_us"), "")
        assert int(quota) / int(period) == pytest.approx(0.5)

        def hog_ended() -> dict | None:
            tasks = orch.tasks("hog", all=True)
            return next((t for t in tasks if t["state"] == "failed"), None)

        ended = wait_until(hog_ended, 60, what="the memory hog to be killed")
        assert ended["exit_code"] == 137
        assert ended["reason"] == "OOM killed"
        table = orch("ps", "hog", "-a").stdout
        assert "OOM killed" in table
    finally:
        orch("rm", "capped", "hog", check=False)
