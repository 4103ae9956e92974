"""A flood at a node's DNS listener (issue 12, item 5): 10,000 queries/s of junk and of
recursive names, from outside the host and from the host itself, on a real 2-host
cluster with the manager's default 0.5 s heartbeat and 2 s liveness TTL.

What must hold throughout: the flooded agent's session keeps sending its heartbeats
(sampled from the kernel: `ss`'s ``lastsnd`` of the agent's connection to the manager,
every 100 ms), no node changes status (both stay READY since before the flood), and the
agent's open fds (/proc/<pid>/fd) stay within what they were plus the resolver's fd
budget, under its raised RLIMIT_NOFILE; the agent logs no error. And the listener is not an open resolver: from
outside, a cluster name is answered and any other name REFUSED.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from dnslib import RCODE, DNSRecord
from tests_support import wait_until

from orch.agent.dns import DnsSettings
from orch.agent.fdlimit import AGENT_NOFILE

pytestmark = pytest.mark.integration

CLUSTER_NODES = 2
FLOODER = Path(__file__).resolve().parent.parent / "dnsflood.py"
RATE = 10_000
SECONDS = 6.0
HEARTBEAT = 0.5  # the dispatcher's default period
# Most time allowed between two sends of the agent to its manager: 3 heartbeat periods,
# still well inside the 2 s liveness TTL.
MOST_QUIET = 3 * HEARTBEAT


def status_since(node: dict) -> float:
    return datetime.fromisoformat(node["status_since"].replace("Z", "+00:00")).timestamp()


def ask(address: str, name: str) -> DNSRecord:
    q = DNSRecord.question(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(q.pack(), (address, 53))
        return DNSRecord.parse(s.recv(4096))


class Sampler(threading.Thread):
    """Every 100 ms: how long ago the agent last sent data to its manager (ms, the least
    over its connections), and how many fds it has open."""

    def __init__(self, cluster, hostname: str, pid: int) -> None:
        super().__init__(daemon=True)
        self.argv = cluster.host_argv(hostname, ["ss", "-Htni", "state", "established"])
        self.manager_ports = {int(m.rsplit(":", 1)[1]) for m in cluster.managers}
        self.pid = pid
        self.quiet: list[int] = []
        self.at: list[float] = []
        self.fds: list[int] = []
        self.stop = threading.Event()

    def lastsnd(self) -> int | None:
        out = subprocess.run(self.argv, capture_output=True, text=True, timeout=5).stdout
        found = []
        # Each connection: a line of addresses, then (indented) its tcp_info.
        for conn in re.split(r"\n(?=\S)", out):
            peer = conn.split()[3] if len(conn.split()) > 3 else ""
            if (
                peer.rsplit(":", 1)[-1].isdigit()
                and int(peer.rsplit(":", 1)[1]) in self.manager_ports
            ):
                sent = re.search(r"lastsnd:(\d+)", conn)
                if sent:
                    found.append(int(sent.group(1)))
        return min(found) if found else None

    def run(self) -> None:
        while not self.stop.wait(0.1):
            quiet = self.lastsnd()
            if quiet is not None:
                self.quiet.append(quiet)
                self.at.append(time.monotonic())
            self.fds.append(len(os.listdir(f"/proc/{self.pid}/fd")))


def flood(argv_prefix: list[str], address: str, kind: str) -> int:
    res = subprocess.run(
        [*argv_prefix, sys.executable, str(FLOODER), address, "53", "--rate", str(RATE),
         "--seconds", str(SECONDS), "--kind", kind],
        capture_output=True, text=True, timeout=SECONDS + 30,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return int(res.stdout)


def soft_nofile(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text()
    return int(re.search(r"Max open files\s+(\d+)", limits).group(1))


def test_the_node_listener_is_not_an_open_resolver(orch, cluster) -> None:
    address = cluster.host("node1")["address"]
    assert ask(address, "nosuch").header.rcode == RCODE.NXDOMAIN  # a cluster name: ours
    assert ask(address, "example.com").header.rcode == RCODE.REFUSED  # never forwarded
    # From the host itself it is forwarded (and fails: the hosts have no route to the
    # machine's resolvers): SERVFAIL, not REFUSED.
    res = cluster.run_on("node1", ["dig", f"@{address}", "+tries=1", "example.com"])
    assert "status: SERVFAIL" in res.stdout, res.stdout


def test_a_flood_stops_no_heartbeat_and_grows_no_fds(orch, cluster) -> None:
    wait_until(
        lambda: all(n["status"] == "ready" for n in orch.json("nodes")), 60, 0.5, "nodes ready"
    )
    before = {n["hostname"]: status_since(n) for n in orch.json("nodes")}
    host = cluster.host("node1")
    pid = cluster.record.pids["agent-1"]
    assert soft_nofile(pid) >= min(AGENT_NOFILE, 20_000)  # raised from 1024 at start
    budget = DnsSettings(upstreams=["a", "b", "c"]).fd_budget(listeners=1)  # resolv.conf: <= 3
    sampler = Sampler(cluster, "node1", pid)
    sampler.start()
    wait_until(lambda: len(sampler.fds) >= 5 and sampler.quiet, 10, 0.1, "first samples")
    baseline = max(sampler.fds)
    log = cluster.state_dir / "logs" / "agent-1.log"
    log_start = log.stat().st_size
    started = time.time()
    try:
        # From outside (this netns, another address): refused or dropped at once.
        sent = flood([], host["address"], "junk,recursive")
        # From the host itself: recursive names are forwarded, within the caps.
        sent += flood(cluster.host_argv("node1", []), host["address"], "recursive")
    finally:
        sampler.stop.set()
        sampler.join()
    took = time.time() - started
    assert sent >= 2 * RATE * SECONDS * 0.9, f"the flooders sent only {sent} in {took:.1f}s"
    assert max(sampler.quiet) < MOST_QUIET * 1000, (
        f"the agent sent nothing to its manager for {max(sampler.quiet)} ms "
        f"(samples: {sorted(sampler.quiet)[-5:]})"
    )
    # Sampled often enough to see a quiet spell of MOST_QUIET (`ss` under load is slow).
    spacing = max(b - a for a, b in zip(sampler.at, sampler.at[1:], strict=False))
    assert spacing < MOST_QUIET - HEARTBEAT, f"samples {spacing:.2f}s apart"
    assert max(sampler.fds) <= baseline + budget, (max(sampler.fds), baseline, budget)
    assert max(sampler.fds) < soft_nofile(pid)
    after = {n["hostname"]: (n["status"], status_since(n)) for n in orch.json("nodes")}
    for hostname, since in before.items():
        assert after[hostname] == ("ready", since), f"{hostname} changed status in the flood"
    assert ask(host["address"], "nosuch").header.rcode == RCODE.NXDOMAIN  # still serving
    with log.open("rb") as f:
        f.seek(log_start)
        during = f.read().decode(errors="replace")
    assert "Traceback" not in during and " ERROR " not in during, during[-3000:]
