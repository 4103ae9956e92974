"""The local cluster itself: hosts on an underlay, images through the registry mirror,
and a `down` (or the next `up`, after a crash) that leaves nothing behind.

Each test runs its own clusters (the module fixture cannot be used to test `down`), in
try/finally so a failure still removes them. "Nothing behind" is checked on the real
thing, category by category, and each category is first shown to be non-empty while the
cluster runs, so the check cannot pass by looking in the wrong place.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests_support import fetch_from, wait_until

from orch.localcluster import hosts
from orch.localcluster.cluster import ClusterSettings, LocalCluster, down, free_port
from orch.runtime import cgroups

pytestmark = pytest.mark.integration

ORCH = str(Path(sys.executable).parent / "orch")
WEB = """apiVersion: orch/v1
kind: Service
metadata: {{name: web}}
spec:
  image: {registry}/busybox:latest
  command: [sh, -c, 'mkdir -p /www && echo "page of $ORCH_TASK_ID" > /www/index.html && exec httpd -f -p 80 -h /www']
  replicas: {replicas}
  stop_grace_period: 100ms
---
apiVersion: orch/v1
kind: Service
metadata: {{name: hostnet}}
spec:
  image: {registry}/busybox:latest
  command: [sleep, '1000']
  networks: [host]
  stop_grace_period: 100ms
---
apiVersion: orch/v1
kind: Network
metadata: {{name: lcnet}}
spec: {{driver: overlay}}
---
apiVersion: orch/v1
kind: Service
metadata: {{name: overlaid}}
spec:
  image: {registry}/busybox:latest
  command: [sleep, '1000']
  replicas: 3
  networks: [lcnet]
  stop_grace_period: 100ms
"""


def new_cluster(tag: str, **settings) -> LocalCluster:
    if missing := [b for b in ("etcd", "runc", "skopeo", "nsenter") if not shutil.which(b)]:
        pytest.skip(f"missing {', '.join(missing)}")
    state = Path(tempfile.mkdtemp(prefix=f"orch-test-cluster-{tag}-"))
    settings.setdefault("registry_port", free_port())
    return LocalCluster(ClusterSettings(state_dir=state, managers=1, **settings))


def take_down(*clusters: LocalCluster) -> None:
    for c in clusters:
        with contextlib.suppress(Exception):
            asyncio.run(down(c.state_dir))
        shutil.rmtree(c.state_dir, ignore_errors=True)


def orch(cluster: LocalCluster, *args: str) -> str:
    env = {
        **os.environ,
        "ORCH_MANAGER": ",".join(cluster.managers),
        "ORCH_TLS_DIR": cluster.record.tls_dir,
    }
    res = subprocess.run([ORCH, *args], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, f"orch {' '.join(args)}: {res.stderr}"
    return res.stdout


def running(cluster: LocalCluster, service: str) -> list[dict]:
    tasks = json.loads(orch(cluster, "ps", service, "-o", "json"))
    return [t for t in tasks if t["state"] == "running" and t["desired_state"] == "running"]


def wait_running(cluster: LocalCluster, service: str, want: int, timeout: float = 90) -> list:
    """The running tasks once there are ``want``; on timeout the failure shows `orch ps -a`
    and the end of every log of the run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(tasks := running(cluster, service)) == want:
            return tasks
        time.sleep(0.1)
    logs = "".join(
        f"--- {log.name}\n" + "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        for log in sorted((cluster.state_dir / "logs").glob("*.log"))
    )
    pytest.fail(f"{want} {service} tasks not running:\n{orch(cluster, 'ps', '-a')}\n{logs}")


# -- what a run leaves on the machine ------------------------------------------------------


@dataclass
class Footprint:
    """Where a run's objects are, taken while it runs (netns ids vanish with the netns)."""

    prefix: str
    state_dir: str
    pids: list[int]
    netns_ids: list[tuple[int, int]]
    runc_roots: list[str]
    cgroups: list[str]
    taken_at: int
    """Clock ticks since boot: a process started later is not the run's, even in a netns
    that has the inode number of one of the run's (freed ones are reused)."""


def footprint(cluster: LocalCluster) -> Footprint:
    r = cluster.record
    ids = [hosts.netns_id(a["netns"]) for a in r.agents]
    return Footprint(
        prefix=r.prefix,
        state_dir=r.state_dir,
        pids=list(r.pids.values()),
        netns_ids=[i for i in ids if i is not None],
        runc_roots=[a["runc_root"] for a in r.agents],
        cgroups=[a["cgroup"] for a in r.agents],
        taken_at=_ticks_now(),
    )


def _ticks_now() -> int:
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK")) + 1


def _started(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot; a huge number if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 1 << 62


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout
    return [link["ifname"] for link in json.loads(out)]


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def leftovers(fp: Footprint, later: Footprint | None = None) -> dict[str, list]:
    """Every kind of object of the run that exists now. ``later``: a run in the same
    state dir, whose processes are not the earlier run's (its netns may even reuse the
    inode numbers of the earlier run's freed ones)."""
    netns_dir = str(hosts.NETNS_DIR / fp.prefix)
    with open("/proc/mounts") as f:
        mounts = [m.split()[1] for m in f if m.split()[1].startswith((fp.state_dir, netns_dir))]
    runc = []
    for root in fp.runc_roots:
        if os.path.isdir(root):
            out = subprocess.run(
                ["runc", "--root", root, "list", "-q"], capture_output=True, text=True
            ).stdout
            runc += out.split()
    in_netns = {p for ident in fp.netns_ids for p in hosts.pids_in_netns(ident)}
    alive = {p for p in fp.pids if os.path.exists(f"/proc/{p}")}
    old = {p for p in in_netns | alive if _started(p) <= fp.taken_at}
    mine = {int(p) for p in os.listdir("/proc") if p.isdigit() and fp.state_dir in _cmdline(p)}
    ignore = {os.getpid()}
    if later is not None:
        ignore |= {*later.pids, *(p for i in later.netns_ids for p in hosts.pids_in_netns(i))}
    procs = sorted((old | mine) - ignore)
    return {
        "netns": [n for n in os.listdir(hosts.NETNS_DIR) if n.startswith(fp.prefix)],
        "links": [n for n in root_links() if n.startswith(fp.prefix)],
        "mounts": mounts,
        "runc": runc,
        "cgroups": [str(d) for c in fp.cgroups for d in cgroups.cgroup_dirs(f"/{c}")],
        "processes": [f"{p} {_cmdline(str(p))}" for p in procs],
    }


# -- the tests -----------------------------------------------------------------------------


def test_three_hosts_pull_through_the_mirror_and_down_leaves_nothing(tmp_path) -> None:
    c = new_cluster("lc", nodes=3, restart_delay=0.5)
    try:
        asyncio.run(c.up())
        r = c.record
        gateway = r.underlay["gateway"]
        assert r.underlay["subnet"].startswith("10.212.") and gateway.endswith(".1")
        assert all(m.startswith(gateway + ":") for m in c.managers)
        nodes = json.loads(orch(c, "nodes", "-o", "json"))
        base = gateway.rsplit(".", 1)[0]
        assert {(n["hostname"], n["addr"], n["status"]) for n in nodes} == {
            (f"node{i}", f"{base}.{10 + i}", "ready") for i in (1, 2, 3)
        }
        _check_host_network(c)

        (tmp_path / "web.yaml").write_text(WEB.format(registry=r.registry, replicas=3))
        orch(c, "apply", "-f", str(tmp_path / "web.yaml"))
        web = wait_running(c, "web", 3)
        wait_running(c, "hostnet", 1)
        wait_running(c, "overlaid", 3)  # overlay endpoints and devices for `down` to take
        # One replica per host, each pulled 127.0.0.1:<port>/busybox through the mirror
        # (inside a host nothing listens on 127.0.0.1:<port>, see _check_host_network).
        assert {t["node_hostname"] for t in web} == {"node1", "node2", "node3"}
        for t in web:
            assert t["image"] == f"{r.registry}/busybox:latest"
            page = fetch_from(c, t["node_hostname"], f"http://{t['addresses'][0].split('/')[0]}/")
            assert page == f"page of {t['id']}\n"

        fp = footprint(c)
        before = leftovers(fp)
        assert all(before.values()), before  # every category is looked for where it is
        assert asyncio.run(down(c.state_dir))
        assert leftovers(fp) == {k: [] for k in before}
        assert not (c.state_dir / "cluster.json").exists()
    finally:
        take_down(c)


def _check_host_network(c: LocalCluster) -> None:
    """Hosts reach each other and the gateway; they have no route out; 127.0.0.1 is their own."""
    r = c.record
    [route] = json.loads(c.run_on("node1", ["ip", "-j", "route"]).stdout)
    assert route["dst"] == r.underlay["subnet"] and route["dev"] == "eth0"  # no default route
    port = r.registry.rsplit(":", 1)[1]
    probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"
    refused = c.run_on("node1", [sys.executable, "-I", "-c", probe, "127.0.0.1", port])
    assert "ConnectionRefusedError" in refused.stderr  # the mirror is needed in a host
    mirror_host, mirror_port = r.registry_mirror.rsplit(":", 1)
    assert (
        c.run_on("node1", [sys.executable, "-I", "-c", probe, mirror_host, mirror_port]).returncode
        == 0
    )
    # node2 listens on its underlay address; node1 connects to it across the bridge.
    server = subprocess.Popen(
        c.host_argv(
            "node2",
            [
                sys.executable, "-I", "-c",
                "import socket; s = socket.create_server(('0.0.0.0', 7946)); print('ready', flush=True);"
                " c, a = s.accept(); c.sendall(a[0].encode())",
            ],
        ),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        client = "import socket; print(socket.create_connection(('{}', 7946), 3).recv(64).decode())"
        node2 = c.host("node2")["address"]
        out = c.run_on("node1", [sys.executable, "-I", "-c", client.format(node2)])
        assert out.stdout.strip() == c.host("node1")["address"], out.stderr
    finally:
        server.kill()
        server.wait()


def test_a_crashed_run_is_removed_by_the_next_up_and_other_runs_are_untouched(tmp_path) -> None:
    a = new_cluster("lca", nodes=2, restart_delay=0.5)
    b = new_cluster("lcb", nodes=1, registry=False)
    try:
        asyncio.run(a.up())
        asyncio.run(b.up())
        assert a.record.prefix != b.record.prefix
        assert a.record.underlay["subnet"] != b.record.underlay["subnet"]

        (tmp_path / "web.yaml").write_text(WEB.format(registry=a.record.registry, replicas=2))
        orch(a, "apply", "-f", str(tmp_path / "web.yaml"))
        wait_running(a, "web", 2)
        wait_running(a, "hostnet", 1)
        crashed = footprint(a)
        assert all(leftovers(crashed).values())
        # The crash: every process of the run dies at once; containers, shims, netns,
        # links, mounts and cgroups stay.
        for pid in crashed.pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in crashed.pids), 10)
        left = leftovers(crashed)
        assert left["netns"] and left["links"] and left["runc"] and left["mounts"], left

        # The next run in that state dir (a prefix that cannot be the old one's: not hex).
        settings = ClusterSettings(
            state_dir=a.state_dir, nodes=1, registry=False, prefix=f"orchz{os.getpid() % 1000}"
        )
        again = LocalCluster(settings)
        asyncio.run(again.up())
        assert leftovers(crashed, later=footprint(again)) == {k: [] for k in left}

        # The other run was not touched: its host and bridge are there, its node is ready.
        assert b.record.underlay["bridge"] in root_links()
        assert hosts.netns_id(b.record.agents[0]["netns"]) is not None
        assert json.loads(orch(b, "nodes", "-o", "json"))[0]["status"] == "ready"

        fps = [footprint(again), footprint(b)]
        asyncio.run(down(a.state_dir))
        asyncio.run(down(b.state_dir))
        for fp in fps:
            assert leftovers(fp) == {k: [] for k in left}, fp.prefix
    finally:
        take_down(a, b)
