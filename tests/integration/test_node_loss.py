"""Node loss on a real 3-host cluster (issue 5, part 1).

A host dies: its agent is killed with SIGKILL together with its containers. Its liveness
lease expires, the node monitor marks it DOWN and its tasks ORPHANED, and replacements run
on the other hosts within the detection window plus a margin (<= 5 s from the kill, to the
agent's own RUNNING timestamps). When the agent comes back the node is READY again and
exactly ``replicas`` tasks run.

An agent that dies alone leaves its containers running; when it comes back after its node
was declared down, it stops the containers of its orphaned tasks: a slot does not stay
doubled.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from tests_support import runc_running, wait_until

pytestmark = pytest.mark.integration

CLUSTER_NODES = 3
# Seconds from the kill to every replacement running (the agents' own RUNNING timestamps).
# bench/node_loss.py measures the same span on this machine: p99 2.28 s, max 2.28 s over
# 10 trials (bench/RESULTS.md), nearly all of it the 2 s liveness TTL; 5 s leaves 2.7 s
# over that p99 for a loaded `make test`.
LIMIT = 5.0

SERVICE = """
apiVersion: orch/v1
kind: Service
metadata: {name: NAME}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.2; done']
  replicas: 3
  stop_grace_period: 100ms
"""


def node_status(orch, hostname: str) -> str:
    return next(n["status"] for n in orch.json("nodes") if n["hostname"] == hostname)


def since(task: dict) -> float:
    return datetime.fromisoformat(task["state_since"].replace("Z", "+00:00")).timestamp()


def node_since(orch, hostname: str) -> float:
    """When the node entered its current status: the manager's own timestamp."""
    node = next(n for n in orch.json("nodes") if n["hostname"] == hostname)
    return datetime.fromisoformat(node["status_since"].replace("Z", "+00:00")).timestamp()


def apply(orch, cluster, tmp_path: Path, name: str) -> list[dict]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SERVICE.replace("NAME", name).replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(path))
    running = wait_until(lambda: len(orch.running(name)) == 3 and orch.running(name), 60)
    # Spread puts one replica on each host.
    assert len({t["node_hostname"] for t in running}) == 3
    return running


def replaced(orch, name: str, host: str, old: set[str]) -> list[dict] | None:
    """The service's 3 running tasks once none of them is on ``host`` and every old task
    of ``host`` is ORPHANED; else None."""
    tasks = orch.tasks(name, all=True)
    orphaned = {t["id"] for t in tasks if t["state"] == "orphaned"}
    running = [t for t in tasks if t["state"] == "running" and t["desired_state"] == "running"]
    if old <= orphaned and len(running) == 3 and all(t["node_hostname"] != host for t in running):
        return running
    return None


def settled(orch, cluster, name: str, host: str, old: set[str]) -> bool:
    """Back to normal: the host is READY, 3 running tasks, and none of the old containers
    runs on the host any more; the old tasks stay ORPHANED (their final state)."""
    tasks = {t["id"]: t for t in orch.tasks(name, all=True)}
    running = [t for t in tasks.values() if t["state"] == "running"]
    return (
        node_status(orch, host) == "ready"
        and len(running) == 3
        and not (old & runc_running(cluster, host))
        and all(tasks[i]["state"] == "orphaned" for i in old if i in tasks)
    )


def test_dead_host_tasks_run_elsewhere_within_5s(orch, cluster, tmp_path: Path) -> None:
    try:
        running = apply(orch, cluster, tmp_path, "lost")
        host = running[-1]["node_hostname"]
        old = {t["id"] for t in running if t["node_hostname"] == host}
        assert old <= runc_running(cluster, host)

        # The host dies: its agent and every container on it, at once.
        killed_at = time.time()
        asyncio.run(cluster.kill_agent(host, crash=True))
        root = cluster.host(host)["runc_root"]
        for cid in old:
            subprocess.run(["runc", "--root", root, "kill", "-a", cid, "KILL"], check=True)

        now_running = wait_until(
            lambda: replaced(orch, "lost", host, old), 30, what="replacements on other hosts"
        )
        assert node_status(orch, host) == "down"
        fresh = [t for t in now_running if t["id"] not in {r["id"] for r in running}]
        assert len(fresh) == len(old)
        took = max(since(t) for t in fresh) - killed_at
        assert took <= LIMIT, f"replacements ran {took:.1f}s after the host died"

        asyncio.run(cluster.start_agent(host))
        wait_until(lambda: settled(orch, cluster, "lost", host, old), 30, what="the host back")
        assert len(orch.running("lost")) == 3
    finally:
        orch("rm", "lost", check=False)


def test_agent_back_after_its_node_was_down_stops_orphaned_containers(
    orch, cluster, tmp_path: Path
) -> None:
    try:
        running = apply(orch, cluster, tmp_path, "survivor")
        host = running[0]["node_hostname"]
        old = {t["id"] for t in running if t["node_hostname"] == host}

        # Only the agent dies; its containers go on running under their shims.
        asyncio.run(cluster.kill_agent(host, crash=True))
        wait_until(lambda: replaced(orch, "survivor", host, old), 30, what="replacements")
        assert old <= runc_running(cluster, host), "the containers should have survived"

        # Back, the agent learns its tasks were orphaned and stops their containers.
        asyncio.run(cluster.start_agent(host))
        wait_until(lambda: settled(orch, cluster, "survivor", host, old), 30, what="cleanup")
        assert len(orch.running("survivor")) == 3
    finally:
        orch("rm", "survivor", check=False)


def test_cut_off_host_is_replaced_and_after_heal_exactly_replicas_run(
    orch, cluster, tmp_path: Path
) -> None:
    """A partition: the host and its containers keep running but reach nothing. Its tasks
    are replaced elsewhere; once the link is back the agent reconnects, learns they were
    orphaned and stops them, so each slot runs exactly once again."""
    host = ""
    try:
        running = apply(orch, cluster, tmp_path, "island")
        host = running[1]["node_hostname"]
        old = {t["id"] for t in running if t["node_hostname"] == host}

        cut_at = time.time()
        asyncio.run(cluster.cut_host(host))
        wait_until(lambda: replaced(orch, "island", host, old), 30, what="replacements")
        assert node_status(orch, host) == "down"
        assert old <= runc_running(cluster, host), "a cut-off host keeps its containers"

        healed_at = time.time()  # just before the link is up: the span below is an upper bound
        asyncio.run(cluster.heal_host(host))
        # Only `runc list` in this poll (no CLI), so the stop is seen within ~0.1 s of it.
        wait_until(
            lambda: not (old & runc_running(cluster, host)), 60, 0.05, "the duplicates stopped"
        )
        stopped_at = time.time()
        wait_until(lambda: settled(orch, cluster, "island", host, old), 30, what="the heal")
        assert len(orch.running("island")) == 3
        ready_at = node_since(orch, host)  # the manager's READY, when the session came back
        outage = healed_at - cut_at
        back, stopped = ready_at - healed_at, stopped_at - ready_at
        print(f"link down {outage:.2f} s; session back {back:.2f} s after the heal; "
              f"duplicates stopped {stopped:.2f} s after that")  # fmt: skip
        assert back > 0, "READY before the heal: the node was never cut off"
        # No gRPC keepalive: the agent's stream lives on through the cut, and the first
        # segment after the heal is TCP's next retransmission. Its timeout doubles from
        # ~0.2 s, so that retransmission comes at most about as long after the heal as the
        # link had been down when it was healed; then the session registers again. Hence
        # a limit that grows with the outage, not a fixed one: runs here saw the session
        # back 3.5 s after a 5.7 s cut and 2.2 s after a 6.7 s one, so the old fixed 5 s
        # (which also counted two CLI runs and a `runc list` per poll) had no margin.
        assert back <= outage + 2.0, f"session back {back:.1f}s after a {outage:.1f}s cut"
        # Back in session, the agent learns its tasks were orphaned and stops them (grace
        # 100 ms; the container exits on TERM).
        assert stopped <= 2.0, f"the duplicates ran {stopped:.1f}s after the session was back"
    finally:
        if host:
            asyncio.run(cluster.heal_host(host))
        orch("rm", "island", check=False)
