"""Chaos on a local cluster: random faults while services scale, then the invariants.

One fault at a time, each repaired after a short outage: kill an agent (the host's
containers live on), kill the leader manager, kill a container, cut a host off the
underlay, stop an etcd member (with a 3-member etcd). Meanwhile services are scaled at
random through the Control API of any manager; a scale that fails during a fault is
counted, not retried (the store holds whatever the user's last accepted write was).

When the faults stop, everything is repaired and the cluster is given `settle_timeout` to
settle; then the invariants of issue 5 must hold, read from the store and from the hosts
themselves (never from the agents' own reports):

- every service runs exactly its replicas: one RUNNING task per slot 1..N, desired
  RUNNING, on a READY node, and HEALTHY where the service has a health check;
- no address is held twice (per overlay network cluster-wide, per node on `bridge`);
- no task runs that is not wanted (a removed slot, a replaced task);
- no host keeps a container, netns, veth or rootfs mount that no wanted task owns.

The same engine runs the short test in `make test` (tests/integration/test_chaos.py) and
the long run in bench/chaos.py; a seed makes a run's fault sequence repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from orch import model
from orch.identity import channels
from orch.localcluster.cluster import LocalCluster
from orch.manager.state.api import Store
from orch.manager.state.election import LEADER_KEY
from orch.manager.state.store import EtcdStore
from orch.overlay import names
from orch.overlay.netns import list_netns, run_command
from orch.proto import control_pb2, control_pb2_grpc, objects_pb2, specs_pb2, types_pb2
from orch.runtime.rootfs import mounts_under
from orch.runtime.runc import OciRuntime

log = logging.getLogger(__name__)

ALL_TASKS = control_pb2.ListTasksRequest(include_history=True)
FAULTS = ("kill_agent", "kill_leader", "kill_container", "partition", "etcd_member")


@dataclass
class ChaosSettings:
    duration: float = 20.0
    """Seconds during which faults are injected and services scaled."""
    seed: int | None = None
    """Seed of the fault sequence; None picks one (reported, so a run can be replayed)."""
    services: int = 2
    """How many services run on the bridge network: sleepers, and every other one an http
    server with an http health check."""
    max_replicas: int = 5
    """Scales pick a replica count in 1..max_replicas."""
    outage: tuple[float, float] = (0.5, 3.0)
    """A fault lasts this long (uniform) before it is repaired."""
    gap: tuple[float, float] = (0.3, 1.5)
    """Pause between one repaired fault and the next."""
    scale_every: tuple[float, float] = (1.0, 3.0)
    """Pause between two scale operations."""
    settle_timeout: float = 60.0
    """Seconds the cluster has after the last repair for every invariant to hold."""
    stable_for: float = 3.0
    """Seconds the invariants must hold in a row to count as settled (longer than the
    liveness TTL: a cut-off node must have been declared down or back by then)."""
    faults: tuple[str, ...] = FAULTS
    """Which faults to draw from; ones the cluster cannot have (a leader kill with one
    manager, an etcd member with one member) are left out."""


@dataclass
class ChaosReport:
    seed: int
    faults: list[dict] = field(default_factory=list)
    """What was done: {"at": seconds from start, "fault": name, "target": ..., "outage": s}."""
    scales: int = 0
    failed_scales: int = 0
    settle_s: float | None = None
    """Seconds from the last repair until the invariants held (and then kept holding for
    stable_for); None if they never did."""
    violations: list[str] = field(default_factory=list)
    """What was still wrong at the settle deadline (empty: all invariants hold)."""
    history: dict[str, list[str]] = field(default_factory=dict)
    """When a service's slots were wrong at the deadline: per slot ("chaos1.2"), each of its
    tasks as the cluster has them (node, desired and actual state since when, the agent's
    message, the scheduler's or agent's error), and per node its state: why, from the
    cluster itself."""


class Chaos:
    """One chaos run: ``async with Chaos(cluster) as chaos: report = await chaos.run()``."""

    def __init__(self, cluster: LocalCluster, settings: ChaosSettings | None = None) -> None:
        self.cluster = cluster
        self.settings = settings or ChaosSettings()
        seed = self.settings.seed
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        # Faults and scales draw from streams of their own: the two loops interleave as
        # timing has it, and one shared stream would then give a replay other faults.
        self.rng = random.Random(self.seed)
        self.scale_rng = random.Random(f"{self.seed}-scales")
        self.report = ChaosReport(seed=self.seed)
        self.services = [f"chaos{i}" for i in range(self.settings.services)]
        tls = cluster.tls()
        self._channels = [channels.aio_channel(m, tls) for m in cluster.managers]
        self._stubs = [control_pb2_grpc.ControlStub(c) for c in self._channels]
        self._store: Store | None = None
        self._t0 = 0.0
        self._repaired = 0.0

    # -- the run --

    async def __aenter__(self) -> Chaos:
        self._store = await EtcdStore.connect(
            self.cluster.record.etcd.split(","), tls=self.cluster.etcd_tls()
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for channel in self._channels:
            await channel.close()
        if self._store is not None:
            await self._store.close()

    async def run(self) -> ChaosReport:
        """Apply the services, inject faults while scaling, repair, settle, check."""
        await self._call(lambda s: s.Apply(self._apply_request()))
        await self._wait(self.violations, 90, "the services to start")
        self._t0 = time.monotonic()
        scaling = asyncio.create_task(self._scale_loop())
        try:
            await self._fault_loop()
        finally:
            scaling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scaling
        self._repaired = time.monotonic()
        self.report.violations = await self._settle()
        return self.report

    async def remove_services(self) -> None:
        """Remove the chaos services and wait until their tasks are gone (test cleanup)."""
        for name in self.services:
            request = control_pb2.RemoveServiceRequest(name=name)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._call(lambda s, r=request: s.RemoveService(r))

        async def gone() -> bool:
            tasks = await self._call(lambda s: s.ListTasks(ALL_TASKS))
            return not any(t.service_name in self.services for t in tasks.tasks)

        await self._wait(gone, 60, "the chaos services' tasks to go")

    def _apply_request(self) -> control_pb2.ApplyRequest:
        """Sleepers, and every other service an http server with an http health check
        (so "healthy where checked" is part of the invariants)."""
        specs = []
        for i, name in enumerate(self.services):
            spec = specs_pb2.ServiceSpec(
                name=name,
                replicas=2,
                container=specs_pb2.ContainerSpec(
                    image=f"{self.cluster.record.registry}/busybox:latest",
                    command=["sh", "-c", 'trap "exit 0" TERM; while true; do sleep 0.2; done'],
                ),
            )
            if i % 2:
                serve = "mkdir -p /www && echo ok > /www/health && exec httpd -f -p 80 -h /www"
                spec.container.command[:] = ["sh", "-c", serve]
                check = spec.container.healthcheck
                check.http.port, check.http.path, check.retries = 80, "/health", 2
                check.interval.FromMilliseconds(300)
                check.timeout.FromSeconds(1)
            spec.container.stop_grace_period.FromMilliseconds(200)
            # Restarts are part of the chaos: keep their backoff short so it settles.
            spec.restart_policy.delay.FromMilliseconds(200)
            spec.restart_policy.max_delay.FromSeconds(2)
            specs.append(spec)
        return control_pb2.ApplyRequest(services=specs)

    async def _call(self, rpc: Callable[[control_pb2_grpc.ControlStub], Awaitable]):
        """One Control API call on the first manager that answers (as the CLI fails over)."""
        last: grpc.aio.AioRpcError | None = None
        for stub in self._stubs:
            try:
                return await rpc(stub)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
                last = exc
        assert last is not None
        raise last

    async def _scale_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scale_rng.uniform(*self.settings.scale_every))
            name = self.scale_rng.choice(self.services)
            replicas = self.scale_rng.randint(1, self.settings.max_replicas)
            request = control_pb2.ScaleRequest(replicas={name: replicas})
            self.report.scales += 1
            try:
                async with asyncio.timeout(10):
                    await self._call(lambda s, r=request: s.Scale(r))
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                self.report.failed_scales += 1
                log.info("chaos: scale %s=%d failed: %s", name, replicas, exc)

    # -- faults --

    def _possible_faults(self) -> list[str]:
        possible = []
        for fault in self.settings.faults:
            if fault == "kill_leader" and len(self.cluster.managers) < 2:
                continue
            if fault == "etcd_member" and len(self.cluster.record.etcd.split(",")) < 3:
                continue
            possible.append(fault)
        return possible

    async def _fault_loop(self) -> None:
        faults = self._possible_faults()
        end = self._t0 + self.settings.duration
        while time.monotonic() < end:
            fault = self.rng.choice(faults)
            outage = round(self.rng.uniform(*self.settings.outage), 2)
            record = {"at": round(time.monotonic() - self._t0, 2), "fault": fault, "outage": outage}
            record["target"] = await getattr(self, f"_{fault}")(outage)
            self.report.faults.append(record)
            log.info("chaos: %s", json.dumps(record))
            await asyncio.sleep(self.rng.uniform(*self.settings.gap))

    def _any_host(self) -> str:
        return self.rng.choice([a["hostname"] for a in self.cluster.record.agents])

    async def _kill_agent(self, outage: float) -> str:
        host = self._any_host()
        await self.cluster.kill_agent(host, crash=True)
        try:
            await asyncio.sleep(outage)
        finally:
            await self.cluster.start_agent(host)
        return host

    async def _kill_leader(self, outage: float) -> str:
        assert self._store is not None
        kv = await self._store.get_key(LEADER_KEY)
        if kv is None:
            return "none (no leader at the time)"
        leader = kv.value.decode()
        index = int(leader.rsplit("-m", 1)[1])
        await self.cluster.kill_manager(index, crash=True)
        try:
            await asyncio.sleep(outage)
        finally:
            await self.cluster.start_manager(index)
        return leader

    async def _kill_container(self, outage: float) -> str:
        del outage  # the orchestrator repairs it
        host = self._any_host()
        runtime = OciRuntime(root=self.cluster.host(host)["runc_root"])
        running = [c["id"] for c in await runtime.list() if c["status"] == "running"]
        if not running:
            return f"{host}: nothing running"
        victim = self.rng.choice(sorted(running))
        await runtime.kill(victim, "SIGKILL", all=True)
        return f"{host}/{victim}"

    async def _partition(self, outage: float) -> str:
        host = self._any_host()
        await self.cluster.cut_host(host)
        try:
            await asyncio.sleep(outage)
        finally:
            await self.cluster.heal_host(host)
        return host

    async def _etcd_member(self, outage: float) -> str:
        member = self.rng.randrange(len(self.cluster.record.etcd.split(",")))
        await self.cluster.stop_etcd_member(member, crash=True)
        try:
            await asyncio.sleep(outage)
        finally:
            await self.cluster.start_etcd_member(member)
        return f"etcd-{member}"

    # -- invariants --

    async def _settle(self) -> list[str]:
        """Until the invariants held for `stable_for` seconds in a row (a slot that looks
        right once may still double when a cut-off node's tasks are declared lost), or
        the settle deadline passed."""
        deadline = time.monotonic() + self.settings.settle_timeout
        whole_since: float | None = None
        while True:
            problems = await self.violations()
            now = time.monotonic()
            if problems:
                whole_since = None
            elif whole_since is None:
                whole_since = now
            if whole_since is not None and now - whole_since >= self.settings.stable_for:
                self.report.settle_s = round(whole_since - self._repaired, 2)
                return []
            if now > deadline:
                await self._record_history()
                return problems or ["the invariants did not hold for stable_for seconds"]
            await asyncio.sleep(0.25)

    async def _wait(self, cond: Callable[[], Awaitable], limit: float, what: str) -> None:
        """Until ``cond()`` is satisfied: truthy, or an empty list of violations."""
        deadline = time.monotonic() + limit
        while True:
            result = await cond()
            if result is True or result == []:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"chaos: waited {limit:.0f}s for {what}: {result}")
            await asyncio.sleep(0.25)

    async def _record_history(self) -> None:
        """Each slot's task history and the nodes' states into the report (best effort:
        a Control API that does not answer is said so)."""
        try:
            listed = await self._call(lambda s: s.ListServices(control_pb2.ListServicesRequest()))
            tasks = list((await self._call(lambda s: s.ListTasks(ALL_TASKS))).tasks)
            nodes = (await self._call(lambda s: s.ListNodes(control_pb2.ListNodesRequest()))).nodes
        except grpc.aio.AioRpcError as exc:
            self.report.history["error"] = [f"{exc.code().name} {exc.details()}"]
            return
        self.report.history.update(
            slot_history([i.service for i in listed.services], tasks, nodes, time.time())
        )

    async def violations(self) -> list[str]:
        """Every broken invariant, as readable lines; [] when the cluster is whole."""
        try:
            listed = await self._call(lambda s: s.ListServices(control_pb2.ListServicesRequest()))
            services = [info.service for info in listed.services]
            tasks = list((await self._call(lambda s: s.ListTasks(ALL_TASKS))).tasks)
            nodes = (await self._call(lambda s: s.ListNodes(control_pb2.ListNodesRequest()))).nodes
        except grpc.aio.AioRpcError as exc:
            return [f"the Control API does not answer: {exc.code().name} {exc.details()}"]
        ready = {n.id for n in nodes if n.status.state == types_pb2.NODE_READY}
        problems = [
            f"node {n.description.hostname} is not ready" for n in nodes if n.id not in ready
        ]
        problems += _replica_problems(services, tasks, ready)
        problems += _address_problems(tasks)
        wanted = defaultdict(set)
        for task in tasks:
            if task.desired_state == types_pb2.RUNNING and not _ended(task):
                wanted[task.node_id].add(task.id)
        hostnames = {n.id: n.description.hostname for n in nodes}
        for node_id, hostname in hostnames.items():
            problems += await self._host_problems(hostname, wanted[node_id], tasks)
        return problems

    async def _host_problems(self, hostname: str, wanted: set[str], tasks: list) -> list[str]:
        """What runs or exists on a host that no wanted task owns (read from the host)."""
        host = self.cluster.host(hostname)
        prefix = host["prefix"]
        out = []
        containers = {c["id"] for c in await OciRuntime(root=host["runc_root"]).list()}
        out += [f"{hostname}: container {c} is not wanted" for c in sorted(containers - wanted)]
        netns = {names.endpoint_of_netns(prefix, n) for n in list_netns(names.owned_prefix(prefix))}
        out += [f"{hostname}: netns of {e} is left over" for e in sorted(netns - wanted - {None})]
        rootfs = {p.parent.name for p in mounts_under(_containers_dir(host))}
        out += [f"{hostname}: rootfs mount of {c} is left over" for c in sorted(rootfs - wanted)]
        veths = await _veth_count(host)
        expected = sum(
            len(model.networks_of(t))
            for t in tasks
            if t.id in wanted and not {model.HOST, model.NONE} & set(model.networks_of(t))
        )
        if veths > expected:
            out.append(f"{hostname}: {veths} veths for {expected} endpoints")
        return out


def slot_history(services, tasks, nodes, now: float) -> dict[str, list[str]]:
    """Per slot of every service, its tasks oldest first as one line each; and per node
    its state. Times are seconds before ``now`` (the wall clock: the cluster's stamps)."""
    hostnames = {n.id: n.description.hostname for n in nodes}

    def ago(stamp) -> str:
        return f"{now - stamp.ToMicroseconds() / 1e6:.1f}s ago" if stamp.seconds else "never"

    out: dict[str, list[str]] = {}
    by_service = {s.id: s.spec.name for s in services}
    for task in sorted(
        tasks, key=lambda t: (t.service_name, t.slot, t.meta.created_at.ToNanoseconds())
    ):
        if task.service_id not in by_service:
            continue
        status = task.status
        line = (
            f"{task.id[:12]} on {hostnames.get(task.node_id, task.node_id or '-')}: desired "
            f"{types_pb2.TaskState.Name(task.desired_state)}, "
            f"{types_pb2.TaskState.Name(status.state)} since {ago(status.timestamp)}"
            f", health {types_pb2.HealthState.Name(status.health)}"
            f", created {ago(task.meta.created_at)}"
            f", restarts {task.restart_count}"
            + (f", message {status.message!r}" if status.message else "")
            + (f", err {status.err!r}" if status.err else "")
        )
        out.setdefault(f"{task.service_name}.{task.slot}", []).append(line)
    out["nodes"] = [
        f"{n.description.hostname}: {types_pb2.NodeStatus.Name(n.status.state)} since "
        f"{ago(n.status.timestamp)}, session on {n.status.manager or '-'}"
        + (f" ({n.status.message})" if n.status.message else "")
        for n in nodes
    ]
    return out


def _ended(task: objects_pb2.Task) -> bool:
    return model.is_terminal(task.status.state)


def _replica_problems(services, tasks, ready: set[str]) -> list[str]:
    out = []
    for service in services:
        name, replicas = service.spec.name, service.spec.replicas
        mine = [t for t in tasks if t.service_id == service.id]
        running = Counter(
            t.slot
            for t in mine
            if t.desired_state == types_pb2.RUNNING
            and t.status.state == types_pb2.RUNNING
            and t.node_id in ready
            and (_healthy(t) or not t.container.HasField("healthcheck"))
        )
        if sorted(running) != list(range(1, replicas + 1)) or any(c > 1 for c in running.values()):
            out.append(f"{name}: running slots {dict(sorted(running.items()))}, want 1..{replicas}")
        for t in mine:
            if (
                t.status.state == types_pb2.RUNNING
                and t.status.health == types_pb2.HEALTH_UNHEALTHY
            ):
                out.append(f"{name}.{t.slot}: task {t.id} is unhealthy")
            if not _ended(t) and t.slot > replicas:
                out.append(f"{name}.{t.slot}: task {t.id} of a removed slot is {t.status.state}")
            if t.desired_state > types_pb2.RUNNING and t.status.state == types_pb2.RUNNING:
                out.append(f"{name}.{t.slot}: task {t.id} runs though it is to stop")
    return out


def _healthy(task: objects_pb2.Task) -> bool:
    return task.status.health == types_pb2.HEALTH_HEALTHY


def _address_problems(tasks) -> list[str]:
    holders: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for task in tasks:
        if _ended(task):
            continue
        for att in task.attachments:
            # Built-in bridge addresses are per host; overlay addresses are cluster-wide.
            scope = task.node_id if att.network == model.BRIDGE else ""
            for address in att.addresses:
                holders[(scope, att.network, address.split("/")[0])].append(task.id)
    return [
        f"address {addr} on {net} is held by {', '.join(sorted(ids))}"
        for (_, net, addr), ids in sorted(holders.items())
        if len(ids) > 1
    ]


def _containers_dir(host: dict) -> Path:
    return Path(host["state_dir"]) / "runtime" / "containers"


async def _veth_count(host: dict) -> int:
    """veths of this host's agent in the host's netns (the container ends live elsewhere)."""
    rc, out, err = await run_command(
        ["ip", "-j", "link", "show", "type", "veth"], netns=host["netns"]
    )
    if rc != 0:
        raise RuntimeError(f"ip link in {host['netns']}: {err.strip()}")
    head = names.owned_prefix(host["prefix"])
    return sum(1 for link in json.loads(out or "[]") if link["ifname"].startswith(head))
