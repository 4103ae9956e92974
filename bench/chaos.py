"""The long chaos run of issue 5 (tests/integration/test_chaos.py is the short one).

A local cluster of 3 hosts, 2 managers and a 3-member etcd; random faults for
``--duration`` seconds while services scale, then the invariants of
orch.localcluster.chaos. Prints the report (seed, faults, settle time, violations) as JSON
and exits 1 if an invariant was still broken at the settle deadline.

    .venv/bin/python bench/chaos.py [--duration 300] [--seed N] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from orch.localcluster.chaos import Chaos, ChaosSettings
from orch.localcluster.cluster import ClusterSettings, LocalCluster, down, free_port


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--rounds", type=int, default=1, help="chaos runs on the same cluster")
    p.add_argument("--services", type=int, default=3)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    cluster = LocalCluster(
        ClusterSettings(
            state_dir=state, nodes=3, managers=2, etcd_members=3, registry_port=free_port()
        )
    )
    failed = False
    try:
        await cluster.up()
        for round_ in range(args.rounds):
            seed = None if args.seed is None else args.seed + round_
            settings = ChaosSettings(duration=args.duration, seed=seed, services=args.services)
            async with Chaos(cluster, settings) as chaos:
                report = await chaos.run()
                await chaos.remove_services()
            failed |= bool(report.violations)
            faults: dict[str, int] = {}
            for f in report.faults:
                faults[f["fault"]] = faults.get(f["fault"], 0) + 1
            print(json.dumps({"round": round_, "fault_counts": faults, **asdict(report)}))
    finally:
        await down(state)
        shutil.rmtree(state, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
