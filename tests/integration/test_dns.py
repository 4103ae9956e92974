"""Service discovery DNS on 3 network-namespace hosts (issue 4, part 2).

Clients are real: busybox nslookup and wget run inside containers (`orch exec`), `dig`
(bind9-dnsutils) runs inside a host's netns against its agent's node listener, and the
timing probe is a plain UDP query from the machine's netns to a host's underlay address.

- a client resolves `web` (and `tasks.web`, `web.<slot>`, `web.front`) to exactly the
  running replicas, and fetches pages by those names; a service with a health check is
  answered only with its healthy replicas, each within 1 s of turning healthy;
- a service on another overlay network is NXDOMAIN, bridge names stay on their host;
  other names get SERVFAIL at once
  (the hosts have no upstream resolver they can reach);
- scale up: each new replica is answered on every host within 1 s of running; scale
  down: the stopped ones are gone from the answers;
- a restarted agent serves its adopted containers again.

Each test starts from the state it needs (`web` at 3 replicas, answered as such on every
host; `gated` is its own test's service), so the tests pass in any order.

Timings are the system's, not the harness's: a replica's RUNNING is the agent's status
timestamp (`state_since`), a change made inside a container is stamped by the container
itself (/proc/uptime, the kernel's boot clock), and every host is asked in parallel, each
reply timed as it arrives.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from tests_support import dns_answer, wait_until
from tests_support import dns_query as query

pytestmark = pytest.mark.integration

CLUSTER_NODES = 3
# The agent restart test must not look like a lost node (see test_agent_restart.py).
CLUSTER_LIVENESS_TTL = 10
# Seconds from a replica running to its address answered on every host. bench/dns.py's
# p99 on this machine (2 vCPU, shared) is 0.161 s (bench/RESULTS.md, "Propagation"): the
# limit leaves 6x that for the load of a full `make test` on 2 cores.
LIMIT = 1.0

MANIFEST = """
apiVersion: orch/v1
kind: Network
metadata: {name: front}
spec: {driver: overlay}
---
apiVersion: orch/v1
kind: Network
metadata: {name: back}
spec: {driver: overlay}
---
apiVersion: orch/v1
kind: Service
metadata: {name: web}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'mkdir -p /www && echo "web.$ORCH_SLOT" > /www/index.html && exec httpd -f -p 80 -h /www']
  replicas: 3
  networks: [front]
  stop_grace_period: 100ms
---
apiVersion: orch/v1
kind: Service
metadata: {name: client}
spec:
  image: REGISTRY/busybox:latest
  command: [sleep, "100000"]
  replicas: 3
  networks: [front]
  stop_grace_period: 100ms
---
apiVersion: orch/v1
kind: Service
metadata: {name: local}
spec:
  image: REGISTRY/busybox:latest
  command: [sleep, "100000"]
  replicas: 3
  stop_grace_period: 100ms
---
apiVersion: orch/v1
kind: Service
metadata: {name: db}
spec:
  image: REGISTRY/busybox:latest
  command: [sleep, "100000"]
  networks: [back]
  stop_grace_period: 100ms
"""


GATED = """
apiVersion: orch/v1
kind: Service
metadata: {name: gated}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'mkdir -p /www && exec httpd -f -p 80 -h /www']
  replicas: 2
  networks: [front]
  healthcheck: {http: {port: 80, path: /ready}, interval: 100ms, timeout: 2s, start_period: 10m}
  stop_grace_period: 100ms
"""


def exec_in(orch, task: dict, *argv: str, timeout: float = 30) -> tuple[int, str]:
    """Run a command inside a task's container with `orch exec`; (rc, output)."""
    res = orch("exec", task["id"], "--", *argv, check=False, timeout=timeout)
    return res.returncode, res.stdout + res.stderr


def nslookup(orch, task: dict, name: str) -> tuple[str, set[str]]:
    """busybox nslookup inside a container: ("ok" | the error it printed, A addresses)."""
    rc, out = exec_in(orch, task, "nslookup", name)
    failed = re.search(r"can't find \S+: (\w+)", out)
    if rc != 0 or failed:
        return (failed.group(1) if failed else f"rc {rc}: {out}"), set()
    # The answer section follows the server's own "Address:" line (127.0.0.11:53).
    found = re.findall(r"^Address:\s+(\d+\.\d+\.\d+\.\d+)$", out, re.M)
    return "ok", set(found)


def dig(cluster, hostname: str, *args: str) -> tuple[str, list[str]]:
    """`dig` inside a host's netns against its agent's node listener: (status, A records)."""
    addr = cluster.host(hostname)["address"]
    res = cluster.run_on(
        hostname,
        ["dig", f"@{addr}", "+tries=1", "+time=3", "+noall", "+comments", "+answer", *args],
    )
    status = re.search(r"status: (\w+)", res.stdout)
    assert status, f"dig {args} on {hostname}: {res.stdout} {res.stderr}"
    return status.group(1), re.findall(r"\sIN\s+A\s+(\S+)", res.stdout)


def front_ip(task: dict) -> str:
    [att] = [a for a in task["attachments"] if a["network"] == "front"]
    return att["addresses"][0].split("/")[0]


def since(task: dict) -> float:
    return datetime.fromisoformat(task["state_since"].replace("Z", "+00:00")).timestamp()


def stamped_in(orch, task: dict, command: str) -> float:
    """Run ``command`` (sh) inside a task's container and return when it ran, as the
    container's own kernel clock saw it just before (wall-clock seconds): what follows is
    timed from the change itself, not from this `orch exec`'s start-up and round trip."""
    rc, out = exec_in(orch, task, "sh", "-c", f"read t _ < /proc/uptime && {command} && echo $t")
    assert rc == 0, out
    uptime = float(out.split()[0])  # CLOCK_BOOTTIME, 10 ms resolution
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - uptime)


_POOL = ThreadPoolExecutor(CLUSTER_NODES, thread_name_prefix="dns-probe")


def ask_every_host(addresses: list[str], name: str) -> dict[str, tuple[float, set[str] | None]]:
    """One query for ``name`` to every host's node listener at once: address -> (when the
    reply came, its A records, or None for no reply within 0.25 s)."""

    def ask(address: str) -> tuple[float, set[str] | None]:
        found = dns_answer(address, name, timeout=0.25)
        return time.time(), found

    return dict(zip(addresses, _POOL.map(ask, addresses), strict=True))


def every_host_when(
    addresses: list[str], name: str, holds: Callable[[set[str]], bool], timeout: float, what: str
) -> float:
    """Ask every host (in parallel, every 20 ms) until each has answered ``name`` so that
    ``holds(records)``; the time the last of them first did (its reply's arrival)."""
    when: dict[str, float] = {}

    def all_hold() -> bool:
        for address, (at, found) in ask_every_host(addresses, name).items():
            if found is not None and holds(found):
                when.setdefault(address, at)
        return len(when) == len(addresses)

    wait_until(all_hold, timeout, 0.02, what)
    return max(when.values())


@pytest.fixture(scope="module")
def services(orch, cluster, tmp_path_factory):
    path = tmp_path_factory.mktemp("dns") / "dns.yaml"
    path.write_text(MANIFEST.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(path))
    wait_until(
        lambda: (
            len(orch.running("web")) == 3
            and len(orch.running("client")) == 3
            and len(orch.running("db")) == 1
            and len(orch.running("local")) == 3
        ),
        90,
        what="web x3, client x3, local x3 and db running",
    )
    yield
    orch("rm", "web", "client", "local", "db", check=False)
    wait_until(lambda: not orch.tasks(all=True), 60, what="every task removed")


@pytest.fixture
def deployed(orch, cluster, services):
    """The state every test starts from, whatever ran before: `web` at 3 replicas, and
    every host answering exactly those 3 (a test that scaled it leaves it otherwise)."""
    if len(orch.running("web")) != 3 or len(orch.tasks("web")) != 3:
        orch("scale", "web=3")
        wait_until(
            lambda: len(orch.running("web")) == 3 and len(orch.tasks("web")) == 3,
            60,
            what="web back at 3 replicas",
        )
    want = web_ips(orch)
    addresses = [a["address"] for a in cluster.record.agents]
    wait_until(lambda: all(query(a, "web") == want for a in addresses), 10, 0.05, "DNS at web x3")


def web_ips(orch) -> set[str]:
    return {front_ip(t) for t in orch.running("web")}


def test_a_container_resolves_web_to_exactly_the_running_replicas(orch, cluster, deployed) -> None:
    want = web_ips(orch)
    assert len(want) == 3
    clients = orch.running("client")
    assert len({c["node_hostname"] for c in clients}) == 3  # one per host
    for client in clients:
        assert nslookup(orch, client, "web") == ("ok", want)
        assert nslookup(orch, client, "tasks.web") == ("ok", want)
        assert nslookup(orch, client, "web.front") == ("ok", want)
    slot2 = next(t for t in orch.running("web") if t["slot"] == 2)
    assert nslookup(orch, clients[0], "web.2") == ("ok", {front_ip(slot2)})


def test_only_healthy_replicas_are_answered(orch, cluster, deployed, tmp_path) -> None:
    path = tmp_path / "gated.yaml"
    path.write_text(GATED.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(path))
    try:
        gated = wait_until(
            lambda: len(r := orch.running("gated")) == 2 and r, 60, what="gated x2 running"
        )
        assert {t["health"] for t in gated} == {"starting"}  # no probe has passed yet
        addresses = [a["address"] for a in cluster.record.agents]
        assert all(
            dig(cluster, a["hostname"], "gated") == ("NOERROR", []) for a in cluster.record.agents
        )
        first = gated[0]
        touched = stamped_in(orch, first, "touch /www/ready")
        answered = every_host_when(
            addresses,
            "gated",
            lambda found: found == {front_ip(first)},
            10,
            "the healthy replica answered on every host",
        )
        took = answered - touched
        print(f"healthy replica answered on every host {took:.3f} s after its probe could pass")
        # Turning healthy takes up to one probe interval (0.1 s) plus an http probe (ms: an
        # http check, not an exec one, whose runc exec alone took up to ~0.8 s under load
        # here and is test_health's to cover); from there the health report takes the
        # status path, the same as RUNNING (LIMIT, above).
        assert took <= LIMIT + 0.5, f"answered {took:.2f} s after its probe could pass"
        client = orch.running("client")[0]
        assert nslookup(orch, client, "gated") == ("ok", {front_ip(first)})
    finally:
        orch("rm", "gated", check=False)
        wait_until(lambda: not orch.tasks_left("gated"), 30, what="gated's tasks to go")


def test_wget_fetches_by_service_name(orch, cluster, deployed) -> None:
    client = orch.running("client")[0]
    rc, out = exec_in(orch, client, "timeout", "5", "wget", "-q", "-O-", "http://web.2/")
    assert (rc, out.strip()) == (0, "web.2"), out
    rc, out = exec_in(orch, client, "timeout", "5", "wget", "-q", "-O-", "http://web/")
    assert rc == 0 and re.fullmatch(r"web\.[123]", out.strip()), out


def test_a_service_on_another_network_does_not_resolve(orch, cluster, deployed) -> None:
    db = orch.running("db")[0]
    for client in orch.running("client"):
        assert nslookup(orch, client, "db")[0] == "NXDOMAIN"
        assert nslookup(orch, client, "db.back")[0] == "NXDOMAIN"
    assert nslookup(orch, db, "web")[0] == "NXDOMAIN"
    [db_ip] = [a["addresses"][0].split("/")[0] for a in db["attachments"]]
    assert nslookup(orch, db, "db") == ("ok", {db_ip})


def test_bridge_names_stay_on_their_host(orch, cluster, deployed) -> None:
    # No networks listed: each task is on its host's own bridge, so it finds only the
    # replica on its own host (spread put one on each).
    local = orch.running("local")
    assert len({t["node_hostname"] for t in local}) == 3
    for task in local:
        [own] = [a["addresses"][0].split("/")[0] for a in task["attachments"]]
        assert nslookup(orch, task, "local") == ("ok", {own})
        assert nslookup(orch, task, "web")[0] == "NXDOMAIN"


def test_dig_from_a_host_netns(orch, cluster, deployed) -> None:
    want = sorted(web_ips(orch))
    db = orch.running("db")[0]
    for agent in cluster.record.agents:
        host = agent["hostname"]
        status, addresses = dig(cluster, host, "web")
        assert (status, sorted(addresses)) == ("NOERROR", want)
        assert dig(cluster, host, "web", "AAAA") == ("NOERROR", [])
        assert dig(cluster, host, "+tcp", "web.front")[0] == "NOERROR"
        # The node listener sees the node's networks: back only where db runs.
        assert dig(cluster, host, "db")[0] == (
            "NOERROR" if host == db["node_hostname"] else "NXDOMAIN"
        )


def test_other_names_get_servfail_at_once(orch, cluster, deployed) -> None:
    # The hosts have no route to the machine's resolvers: the forward fails at once
    # (ENETUNREACH), it does not wait for the 2 s forward timeout.
    res = cluster.run_on(
        "node1", ["dig", f"@{cluster.host('node1')['address']}", "+tries=1", "example.com"]
    )
    assert "status: SERVFAIL" in res.stdout, res.stdout
    took = int(re.search(r"Query time: (\d+) msec", res.stdout).group(1))
    assert took < 500, f"SERVFAIL after {took} ms"
    # The same from a container's own resolver: SERVFAIL, not a timeout (busybox nslookup
    # would print "timed out"); how fast is dig's measure above, not this exec's.
    client = orch.running("client")[0]
    assert nslookup(orch, client, "example.com")[0] == "SERVFAIL"


def test_scale_up_answers_new_replicas_within_1s_of_running(orch, cluster, deployed) -> None:
    before = {t["id"] for t in orch.running("web")}
    addresses = [a["address"] for a in cluster.record.agents]
    seen: dict[tuple[str, str], float] = {}  # (host, address) -> its first reply with it
    orch("scale", "web=6")

    def every_host_answers_six() -> bool:
        # Every host asked at once, each reply timed as it arrives.
        answers = ask_every_host(addresses, "web")
        for host, (at, found) in answers.items():
            for ip in found or ():
                seen.setdefault((host, ip), at)
        return all(found is not None and len(found) == 6 for _, found in answers.values())

    wait_until(every_host_answers_six, 60, 0.02, "6 replicas answered on every host")
    fresh = [t for t in orch.running("web") if t["id"] not in before]
    assert len(fresh) == 3
    lags = [max(seen[(h, front_ip(t))] for h in addresses) - since(t) for t in fresh]
    print(
        "new replicas answered on every host after running: " + " ".join(f"{x:.3f}" for x in lags)
    )
    assert max(lags) <= LIMIT, f"answered {lags} s after running"
    want = web_ips(orch)
    assert len(want) == 6
    for client in orch.running("client"):
        assert nslookup(orch, client, "web") == ("ok", want)

    orch("scale", "web=2")
    wait_until(lambda: len(orch.running("web")) == 2, 30, what="scale down to 2")
    want = web_ips(orch)
    wait_until(
        lambda: all(query(address, "web") == want for address in addresses),
        5,
        what="only the 2 remaining replicas answered",
    )


def test_a_restarted_agent_serves_its_adopted_containers(orch, cluster, deployed) -> None:
    client = orch.running("client")[0]
    host = client["node_hostname"]
    asyncio.run(cluster.kill_agent(host, crash=True))
    asyncio.run(cluster.start_agent(host))
    want = web_ips(orch)
    wait_until(
        lambda: nslookup(orch, client, "web") == ("ok", want),
        30,
        what="the adopted client resolving web again",
    )
    assert client["id"] in {t["id"] for t in orch.running("client")}  # not replaced


FLAKY = """
apiVersion: orch/v1
kind: Service
metadata: {name: flaky}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'mkdir -p /www && echo ok > /www/health && exec httpd -f -p 80 -h /www']
  replicas: 2
  networks: [front]
  healthcheck: {http: {port: 80, path: /health}, interval: 500ms, timeout: 1s, retries: 2}
  restart_policy: {condition: any, delay: 500ms}
  stop_grace_period: 100ms
"""


def test_a_replica_failing_its_check_leaves_dns_in_time_and_is_replaced(
    orch, cluster, deployed, tmp_path
) -> None:
    """interval 0.5 s x retries 2 + 1 s: the failing replica's address is gone from every
    host's answers within 2 s of its health file going (the container's own clock), and a
    replacement takes its place."""
    path = tmp_path / "flaky.yaml"
    path.write_text(FLAKY.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(path))
    addresses = [a["address"] for a in cluster.record.agents]
    try:
        healthy = wait_until(
            lambda: (
                (r := orch.running("flaky"))
                and {t["health"] for t in r} == {"healthy"}
                and len(r) == 2
                and r
            ),
            60,
            what="2 healthy flaky replicas",
        )
        ips = {front_ip(t) for t in healthy}
        wait_until(lambda: all(query(a, "flaky") == ips for a in addresses), 5, 0.02)
        victim = next(t for t in healthy if t["slot"] == 2)
        broken_at = stamped_in(orch, victim, "rm /www/health")
        gone_at = every_host_when(
            addresses,
            "flaky",
            lambda found: front_ip(victim) not in found,
            10,
            "the failing replica gone from every host's answers",
        )
        took = gone_at - broken_at
        print(f"the failing replica left DNS on every host {took:.3f} s after its check broke")
        # Failing takes 2 probes 0.5 s apart, the first up to 0.5 s after the file went:
        # <= 1 s; then the status path to DNS (bench/dns.py p99 0.161 s here): 2 s leaves
        # ~0.8 s for a loaded machine.
        assert took <= 0.5 * 2 + 1, f"left DNS {took:.2f} s after its check broke"

        def replaced() -> list[dict] | None:
            running = orch.running("flaky")
            fresh = [t for t in running if t["slot"] == 2 and t["id"] != victim["id"]]
            return fresh if fresh and fresh[0]["health"] == "healthy" else None

        (new,) = wait_until(replaced, 30, what="a healthy replacement in slot 2")
        history = [t for t in orch.tasks("flaky", all=True) if t["id"] == victim["id"]]
        assert history and history[0]["reason"] == "unhealthy"
        wait_until(lambda: all(front_ip(new) in query(a, "flaky") for a in addresses), 5, 0.02)
    finally:
        orch("rm", "flaky", check=False)
        wait_until(lambda: not orch.tasks_left("flaky"), 30)
