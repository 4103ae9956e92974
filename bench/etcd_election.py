"""Benchmark: the etcd leader member dies -> how long a manager's write waits. p50/p99.

Three etcd members (as the local cluster starts them, on 127.0.0.1). Each trial kills the
member that leads with SIGKILL and at once sends, through an ``EtcdStore`` as a manager
uses it (attempts of 2 s retried, but with a long overall bound so the wait is measured,
not cut), the two calls an `orch scale` makes: the revision read (linearizable) and a
write. Measured from the kill:

- elected: a remaining member reports a leader (maintenance status, polled every 20 ms);
- read: the linearizable revision read answered;
- write: a put answered.

Then the member is started again and the cluster answers through it before the next trial.
``--hogs N`` runs N CPU hogs at the same priority meanwhile, as tests/stress.sh does (one
per core is what `make test-stress` runs).

    .venv/bin/python bench/etcd_election.py [--trials 20] [--hogs 2]

Prints one JSON line per trial and a summary; bench/RESULTS.md records the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from benchlib import summary

from orch.localcluster import etcd
from orch.manager.state.store import EtcdStore

HOST = "127.0.0.1"
# The overall bound of each measured call: far above any election, so the figure is the
# wait itself, not the Store's timeout.
MEASURE_BOUND = 60.0


class Members:
    """Three etcd members as child processes; ``kill``/``start`` by index."""

    def __init__(self, state: Path) -> None:
        self.specs = etcd.member_specs(HOST, 3, state)
        self.pki = etcd.make_pki(state, self.specs)
        self.tls = etcd.client_tls(state)
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.token = f"bench-{os.getpid()}"

    @property
    def endpoints(self) -> list[str]:
        return [m["client"] for m in self.specs]

    async def start(self, i: int, *, new: bool) -> None:
        argv = etcd.member_argv(self.specs, i, token=self.token, new=new, pki=self.pki)
        self.procs[i] = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def kill(self, i: int) -> None:
        proc = self.procs.pop(i)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def stop_all(self) -> None:
        for i in list(self.procs):
            await self.kill(i)


@contextlib.asynccontextmanager
async def members() -> AsyncIterator[Members]:
    state = Path(tempfile.mkdtemp(prefix="orch-bench-etcd-"))
    group = Members(state)
    try:
        for i in range(3):
            await group.start(i, new=True)
        await etcd.wait_answers(group.endpoints, 60, "the etcd cluster", tls=group.tls)
        yield group
    finally:
        await group.stop_all()
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def hogs(count: int):
    """``count`` busy loops at the same priority, ended on the way out."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


async def elected(group: Members, victim: int) -> None:
    while True:
        leader = await etcd.leader_index(group.specs, tls=group.tls)
        if leader is not None and leader != victim:
            return
        await asyncio.sleep(0.02)


async def since(start: float, coro) -> float:
    await coro
    return time.monotonic() - start


async def trial(group: Members, store: EtcdStore, n: int) -> dict[str, float]:
    victim = await etcd.leader_index(group.specs, tls=group.tls)
    assert victim is not None, "no etcd leader before the kill"
    await group.kill(victim)
    start = time.monotonic()
    results = await asyncio.gather(
        since(start, elected(group, victim)),
        since(start, store.revision()),
        since(start, store.put_key("/bench/election", str(n).encode())),
    )
    await group.start(victim, new=False)
    await etcd.wait_answers([group.specs[victim]["client"]], 60, f"member {victim}", tls=group.tls)
    return dict(zip(("elected", "read", "write"), results, strict=True))


async def main(trials: int, hog_count: int) -> None:
    async with members() as group:
        store = await EtcdStore.connect(group.endpoints, tls=group.tls, timeout=MEASURE_BOUND)
        try:
            with hogs(hog_count):
                rows = []
                for n in range(trials):
                    row = await trial(group, store, n)
                    rows.append(row)
                    print(json.dumps({"trial": n, **{k: round(v, 3) for k, v in row.items()}}))
        finally:
            await store.close()
    out: dict[str, object] = {"trials": trials, "hogs": hog_count}
    for key in ("elected", "read", "write"):
        values = [r[key] for r in rows]
        out.update(summary(values, key))
        out[f"{key}_max_s"] = round(max(values), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--hogs", type=int, default=0, help="CPU hogs running meanwhile")
    args = p.parse_args()
    asyncio.run(main(args.trials, args.hogs))
