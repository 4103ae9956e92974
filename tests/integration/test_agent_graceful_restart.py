"""A graceful agent restart is not a node loss (the default 2 s liveness TTL).

The agent of one host of a two-host cluster is stopped with SIGTERM, as `systemctl
restart` does during an upgrade. It tells its manager it is restarting (Leaving) and exits
within about a second; the manager keeps the node for the restart grace (30 s by default):
well past the 2 s TTL the node is "disconnected" with the message "agent restarting", not
down, and no task is orphaned or replaced on the other host. Started again, the agent
adopts the same containers (same runc pids) and the node is READY.

A SIGKILLed agent still goes down within the TTL: test_node_loss.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests_support import STEADY_SERVICE, ControlProbe, holds_for, wait_until

from orch.proto import types_pb2

pytestmark = pytest.mark.integration

CLUSTER_NODES = 2  # a lost node's tasks would be replaced on the other host at once
HOLD = 4.0  # seconds the node must stay un-lost: twice the default TTL
# Seconds from SIGTERM to the agent's exit: Leaving waits for the manager at most
# leave_timeout (1 s, SessionSettings), then the ordered shutdown (no container is
# stopped). The span is the kernel's (a pidfd), from the signal itself.
EXIT_LIMIT = 3.0

SERVICE = STEADY_SERVICE


def runc_pids(cluster, hostname: str) -> dict[str, int]:
    root = cluster.host(hostname)["runc_root"]
    out = subprocess.run(
        ["runc", "--root", root, "list", "--format", "json"], capture_output=True, text=True
    ).stdout
    return {c["id"]: c["pid"] for c in json.loads(out or "null") or [] if c["status"] == "running"}


def node(orch, hostname: str) -> dict:
    return next(n for n in orch.json("nodes") if n["hostname"] == hostname)


def sigterm_and_time_exit(cluster, hostname: str) -> float:
    """SIGTERM the host's agent; seconds until the process was gone (pidfd readable)."""
    pid = cluster.record.pids[f"agent-{cluster._host_number(hostname)}"]
    pidfd = os.pidfd_open(pid)
    try:
        sent = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        readable, _, _ = select.select([pidfd], [], [], 30)
        exited = time.monotonic() - sent
    finally:
        os.close(pidfd)
    assert readable, "the agent did not exit within 30 s of SIGTERM"
    return exited


def stays_unlost(api: ControlProbe, before: set[str]) -> bool:
    """node1 disconnected for a restart, not down; no task replaced or stopped (what
    `orch nodes` and `orch ps -a` show, read in-process: a sample costs milliseconds)."""
    status = api.nodes()["node1"].status
    assert status.state == types_pb2.NODE_DISCONNECTED, status
    assert status.message.startswith("agent restarting"), status
    tasks = api.tasks("steady", history=True)
    assert {t.id for t in tasks} == before, "a task was replaced"
    assert all(t.status.state == types_pb2.RUNNING for t in tasks), tasks
    return True


def test_sigterm_restart_keeps_the_node_and_its_tasks(orch, cluster, tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(SERVICE.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(path))
    try:
        running = wait_until(
            lambda: len(orch.running("steady")) == 2 and orch.running("steady"), 60
        )
        assert {t["node_hostname"] for t in running} == {"node1", "node2"}
        before = {t["id"] for t in running}
        mine = {t["id"] for t in running if t["node_hostname"] == "node1"}
        pids = runc_pids(cluster, "node1")
        assert mine <= set(pids)

        started = time.monotonic()
        exited = sigterm_and_time_exit(cluster, "node1")
        print(f"the agent exited {exited:.3f} s after SIGTERM")
        assert exited < EXIT_LIMIT, f"the agent took {exited:.1f}s to stop on SIGTERM"
        asyncio.run(cluster.kill_agent("node1", crash=False))  # reaps it, as the cluster does

        # Disconnected from its exit on (the manager acknowledged Leaving first), and so
        # all through well past the TTL: not down, nothing orphaned or replaced.
        with ControlProbe(cluster) as api:
            holds_for(lambda: stays_unlost(api, before), HOLD, 0.05, "node1 kept for a restart")
        assert time.monotonic() - started >= HOLD

        asyncio.run(cluster.start_agent("node1"))
        wait_until(lambda: node(orch, "node1")["status"] == "ready", 30, what="node1 ready")
        assert node(orch, "node1")["status_message"] == ""

        # Same tasks, same containers, same processes; no history of a replacement.
        wait_until(lambda: len(orch.running("steady")) == 2, 30)
        tasks = orch.tasks("steady", all=True)
        assert {t["id"] for t in tasks} == before, json.dumps(tasks, indent=1)
        assert all(t["state"] == "running" and t["restart_count"] == 0 for t in tasks)
        still = runc_pids(cluster, "node1")
        for task_id in mine:
            assert still.get(task_id) == pids[task_id], "the container was restarted"
    finally:
        orch("rm", "steady", check=False)
