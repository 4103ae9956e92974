"""The chaos test of issue 5, short version (bench/chaos.py runs the long one).

Random faults, one at a time and each repaired after a short outage (kill an agent, kill
the leader manager, kill a container, cut a host off the underlay, stop an etcd member)
while two services scale at random. Once the faults stop the cluster must settle: every
service runs exactly its replicas, no address is held twice, nothing unwanted runs, and no
host keeps a container, netns, veth or mount no wanted task owns
(orch.localcluster.chaos has the invariants). A failure prints the seed: CHAOS_SEED=<seed>
replays the same fault sequence.
"""

from __future__ import annotations

import asyncio
import json
import os
import random

import pytest
from tests_support import ARTIFACTS

from orch.localcluster.chaos import Chaos, ChaosReport, ChaosSettings
from orch.overlay.netns import create_netns, delete_netns

pytestmark = pytest.mark.integration

CLUSTER_NODES = 3
CLUSTER_MANAGERS = 2
CLUSTER_ETCD_MEMBERS = 3


# 20 s of faults, up to 60 s to settle, the services' start and removal: the test's own
# bound; the cluster's set-up has its own (tests/conftest.py CLUSTER_UP_TIMEOUT).
@pytest.mark.timeout(240, func_only=True)
def test_cluster_settles_whole_after_random_faults(cluster, capsys) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 30))
    with capsys.disabled():  # on the terminal before the first fault, whatever happens next
        print(f"\nchaos seed {seed} (CHAOS_SEED={seed} replays this fault sequence)", flush=True)
    settings = ChaosSettings(duration=20.0, seed=seed)
    started: list[Chaos] = []

    async def run() -> tuple[ChaosReport, list[str]]:
        async with Chaos(cluster, settings) as chaos:
            started.append(chaos)
            try:
                return await chaos.run(), await leftover_seen(chaos, cluster)
            finally:
                await chaos.remove_services()

    try:
        report, seen = asyncio.run(run())
    except BaseException:
        keep_fault_log(started[0].report if started else None)
        raise
    summary = json.dumps(report.__dict__, indent=1)
    if report.violations:
        keep_fault_log(report)
    assert report.faults, "no fault was injected"
    assert not report.violations, f"the cluster did not settle (seed {report.seed}):\n{summary}"
    print(summary)
    assert any("chaosstray" in line for line in seen), f"a stray netns went unnoticed: {seen}"


def keep_fault_log(report: ChaosReport | None) -> None:
    """The faults injected so far, beside the cluster's kept logs, and in the test output."""
    if report is None:
        return
    text = json.dumps(report.__dict__, indent=1)
    print(f"chaos report (seed {report.seed}):\n{text}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"chaos-{report.seed}.json").write_text(text)


async def leftover_seen(chaos: Chaos, cluster) -> list[str]:
    """The invariants' check itself: a netns in an agent's name space that no task owns
    must be reported."""
    stray = f"{cluster.record.agents[0]['prefix']}-chaosstray"
    await create_netns(stray)
    try:
        return await chaos.violations()
    finally:
        await delete_netns(stray)
