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

import pytest

from orch.localcluster.chaos import Chaos, ChaosReport, ChaosSettings
from orch.overlay.netns import create_netns, delete_netns

pytestmark = pytest.mark.integration

CLUSTER_NODES = 3
CLUSTER_MANAGERS = 2
CLUSTER_ETCD_MEMBERS = 3


def test_cluster_settles_whole_after_random_faults(cluster) -> None:
    seed = os.environ.get("CHAOS_SEED")
    settings = ChaosSettings(duration=20.0, seed=int(seed) if seed else None)

    async def run() -> tuple[ChaosReport, list[str]]:
        async with Chaos(cluster, settings) as chaos:
            try:
                return await chaos.run(), await leftover_seen(chaos, cluster)
            finally:
                await chaos.remove_services()

    report, seen = asyncio.run(run())
    summary = json.dumps(report.__dict__, indent=1)
    assert report.faults, "no fault was injected"
    assert not report.violations, f"the cluster did not settle (seed {report.seed}):\n{summary}"
    print(summary)
    assert any("chaosstray" in line for line in seen), f"a stray netns went unnoticed: {seen}"


async def leftover_seen(chaos: Chaos, cluster) -> list[str]:
    """The invariants' check itself: a netns in an agent's name space that no task owns
    must be reported."""
    stray = f"{cluster.record.agents[0]['prefix']}-chaosstray"
    await create_netns(stray)
    try:
        return await chaos.violations()
    finally:
        await delete_netns(stray)
