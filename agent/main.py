"""The agent process: one per node. Wires session, worker, runtime, networking and logs.

Containers outlive the agent: on start it finds the containers an earlier agent process
left (the runtime's state dir), and once the first full assignment set arrives it adopts
those still assigned and removes the ones that are not (garbage from tasks deleted while
it was away). The node id is its certificate's CN (identity.py): a restarted agent loads
the same certificate from its state dir and is the same node.

SIGTERM is a graceful stop, most often a restart (an upgrade): the agent first tells its
manager it is leaving and will be back (session.py, at most ``leave_timeout``, 1 s), so
the node is kept for the restart grace instead of counting as lost after the short
liveness TTL; then it stops, leaving its containers running. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from orch.agent import dns
from orch.agent.containers import ContainerEnvironment
from orch.agent.execs import ExecRunner
from orch.agent.fdlimit import raise_fd_limit
from orch.agent.identity import AgentIdentity, obtain_identity
from orch.agent.logs import LogPublisher
from orch.agent.networks import Networks
from orch.agent.session import Session, SessionSettings
from orch.agent.worker import Worker
from orch.errors import OrchError
from orch.identity.join import join_address_for
from orch.overlay.endpoints import EndpointManager
from orch.overlay.links import overlay_mtu_for
from orch.overlay.settings import NetworkSettings
from orch.proto import dispatcher_pb2, objects_pb2, types_pb2
from orch.runtime.containers import ContainerRuntime
from orch.runtime.images import ImageStore
from orch.runtime.settings import ImageSettings, RuntimeSettings

log = logging.getLogger("orch.agent")


@dataclass
class AgentSettings:
    state_dir: Path
    """Everything this agent keeps: node id, images, containers, logs, network records."""
    managers: list[str]
    """Manager addresses (host:port): their mTLS ports."""
    join_token: str = ""
    """A worker join token: needed on the first start only (no identity in state_dir)."""
    join_addresses: list[str] = field(default_factory=list)
    """Managers' join ports; empty = each manager address with its port plus one."""
    hostname: str = field(default_factory=socket.gethostname)
    """The node's name as users see it."""
    advertise_addr: str = ""
    """The node's underlay address (shown in `orch nodes`; the local end of VXLAN
    tunnels; where published ports are reached)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Engine labels reported at registration."""
    runtime_binary: str = "runc"
    """"runc" or "crun"."""
    runc_root: Path | None = None
    """The OCI runtime's state root; default <state_dir>/runc."""
    cgroup_parent: str = ""
    """Cgroup parent for containers; default orch-<hostname>."""
    network_prefix: str = "orch"
    """Prefix of every netns and link this agent makes (unique per agent on a machine)."""
    bridge_subnet: str = "10.213.0.0/24"
    """Subnet of this node's local bridge network."""
    nano_cpus: int = 0
    """CPU capacity to report; 0 = what the machine has."""
    memory_bytes: int = 0
    """Memory capacity to report; 0 = what the machine has."""
    registry_mirrors: dict[str, str] = field(default_factory=dict)
    """Registry "host:port" -> mirror "host:port" to pull its images from (ImageSettings.mirrors)."""
    dns_listen: str | None = None
    """"ip:port" of the node's own DNS listener (every network of the node); None =
    127.0.0.1:53 (dns.NODE_LISTEN); "" = none."""
    dns_upstreams: list[str] | None = None
    """Resolvers for names that are not the cluster's; None = the host's resolv.conf."""
    dns_rate: int = int(dns.DnsSettings.rate)
    """Queries per second one source may send to one DNS listener (DnsSettings.rate)."""
    oci_layout_dirs: tuple[str, ...] = ImageSettings.oci_layout_dirs
    """Directories whose OCI layouts tasks may run as ``oci:/path`` images."""
    default_pids_limit: int = RuntimeSettings.default_pids_limit
    """Pids limit of a container whose task sets none."""
    restart_grace: float = 0.0
    """Seconds a graceful stop asks the manager to wait for this agent's return before
    the node counts as lost (the manager caps it); 0 = the manager's default."""


def describe_node(s: AgentSettings) -> objects_pb2.NodeDescription:
    return objects_pb2.NodeDescription(
        hostname=s.hostname,
        addr=s.advertise_addr,
        resources=types_pb2.Resources(
            nano_cpus=s.nano_cpus or (os.cpu_count() or 1) * 10**9,
            memory_bytes=s.memory_bytes or _memory_total(),
        ),
        platform=f"linux/{platform.machine()}",
        runtime=_runtime_version(s.runtime_binary),
        labels=s.labels,
    )


def _memory_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _runtime_version(binary: str) -> str:
    path = shutil.which(binary)
    if not path:
        return binary
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    first = out.stdout.splitlines()[0] if out.stdout else binary
    return first.replace(" version", "")


class Agent:
    def __init__(self, settings: AgentSettings, identity: AgentIdentity) -> None:
        s = settings
        self.settings = s
        self.identity = identity
        self.node_id = identity.node_id
        self.runtime = ContainerRuntime(
            RuntimeSettings(
                state_dir=s.state_dir / "runtime",
                runc_root=s.runc_root or s.state_dir / "runc",
                runtime_binary=s.runtime_binary,
                cgroup_parent=s.cgroup_parent or f"orch-{s.network_prefix}",
                default_pids_limit=s.default_pids_limit,
            )
        )
        self.images = ImageStore(
            s.state_dir / "images",
            ImageSettings(
                mirrors=dict(s.registry_mirrors), oci_layout_dirs=tuple(s.oci_layout_dirs)
            ),
        )
        self.endpoints = EndpointManager(
            NetworkSettings(
                prefix=s.network_prefix,
                state_dir=s.state_dir,
                bridge_subnet=s.bridge_subnet,
                host_address=s.advertise_addr or None,
                # Overlays fit inside the underlay: its MTU minus the VXLAN header.
                overlay_mtu=overlay_mtu_for(s.advertise_addr) if s.advertise_addr else 1450,
            )
        )
        self.networks = Networks(self.endpoints)
        host_resolv_conf = dns.read_host_resolv_conf()
        self.dns = dns.DnsServer(
            dns.node_settings(
                listen=s.dns_listen,
                upstreams=s.dns_upstreams,
                rate=s.dns_rate,
                host_resolv_conf=host_resolv_conf,
            )
        )
        self.containers = ContainerEnvironment(
            runtime=self.runtime,
            images=self.images,
            endpoints=self.endpoints,
            node_name=s.hostname,
            files_dir=s.state_dir / "etc",
            resolv_conf=dns.CONTAINER_RESOLV_CONF,
            dns=self.dns,
            host_resolv_conf=host_resolv_conf,
        )
        self.worker = Worker(self.containers, self._report)
        self.logs = LogPublisher(
            node_id=self.node_id, read_logs=self._read_logs, tasks=lambda: self.worker.tasks
        )
        self.execs = ExecRunner(node_id=self.node_id, runtime=self.runtime)
        self.session = Session(
            node_id=self.node_id,
            description=describe_node(s),
            settings=SessionSettings(managers=s.managers, restart_grace=s.restart_grace),
            tls=identity.client_tls,
            on_assignments=self._assign,
            on_log_subscription=self.logs.handle,
            on_exec=self.execs.handle,
        )
        self._collected = False

    def _report(self, update: dispatcher_pb2.TaskStatusUpdate) -> None:
        self.session.report(update)

    def _read_logs(self, task_id: str, tail: int, follow: bool):
        return self.runtime.read_logs(task_id, tail=tail, follow=follow)

    async def _assign(self, msg: dispatcher_pb2.Assignments) -> None:
        self.dns.apply(msg)  # first: a container started below may ask at once
        await self.networks.apply(msg)  # first: tasks are prepared on these networks
        await self.worker.assign(msg)
        for task_id in msg.removed:
            self.session.forget(task_id)
        if msg.full and not self._collected:
            self._collected = True
            await self._collect_garbage({t.id for t in msg.tasks})

    async def _collect_garbage(self, assigned: set[str]) -> None:
        """Containers of tasks this node no longer holds (deleted while the agent was
        away, or left by a crashed run) are removed, logs and all; so is what an earlier
        agent process, killed while it prepared such a task, left half made (a mounted
        rootfs without a container record, an endpoint without a container). Assignments
        are handled one message at a time, so no task outside ``assigned`` is being set
        up meanwhile; runners of assigned ones keep theirs."""
        for task_id in sorted(await self.runtime.held_ids() - assigned):
            log.info("removing container %s: its task is no longer assigned here", task_id)
            await self.containers.forget(task_id)
        # Network leftovers of an earlier run: endpoints of tasks not assigned here,
        # unfinished endpoints, overlay devices no endpoint uses, published ports without
        # an endpoint.
        try:
            report = await self.endpoints.sweep(live=assigned)
        except (OrchError, OSError) as exc:
            log.warning("network sweep failed: %s", exc)
            return
        for error in report.errors:
            log.warning("network sweep: %s", error)

    async def leave(self) -> None:
        """The start of a graceful stop: ask the manager to keep the node while the agent
        restarts. Bounded (SessionSettings.leave_timeout); cancel run() after it."""
        if await self.session.leave():
            log.info("stopping; the manager keeps node %s for the agent's restart", self.node_id)
        else:
            log.info("stopping; no manager took note (the node counts as lost after its TTL)")

    async def run(self) -> None:
        log.info("agent %s (node %s) starting", self.settings.hostname, self.node_id)
        renewal = asyncio.create_task(
            self.identity.renew_forever(self.settings.managers), name="renewal"
        )
        try:
            await self.dns.start()
            await self.session.run()
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            await self.dns.close()  # containers' resolvers come back with the next agent
            await self.logs.close()
            await self.execs.close()  # kills the commands `orch exec` runs
            await self.worker.close()
            await self.runtime.close()  # the shim server; the containers keep running


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="orch-agent", description="Run an orch agent.")
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/orch/agent"))
    p.add_argument(
        "--manager",
        default="127.0.0.1:7700",
        help="comma-separated host:port list of the managers' mTLS ports",
    )
    p.add_argument(
        "--join-token",
        default=os.environ.get("ORCH_JOIN_TOKEN", ""),
        help="a worker join token: needed on the first start only (or $ORCH_JOIN_TOKEN)",
    )
    p.add_argument(
        "--join-addr",
        default="",
        help="comma-separated join ports (host:port) to join through (default: each "
        "--manager address with its port plus one)",
    )
    p.add_argument("--hostname", default=socket.gethostname())
    p.add_argument("--advertise-addr", default="")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--runtime", default="runc", choices=["runc", "crun"])
    p.add_argument("--network-prefix", default="orch")
    p.add_argument("--bridge-subnet", default="10.213.0.0/24")
    p.add_argument("--cpus", type=float, default=0, help="CPU capacity to report")
    p.add_argument("--memory", type=int, default=0, help="memory capacity to report (bytes)")
    p.add_argument(
        "--registry-mirror",
        action="append",
        default=[],
        type=_mirror,
        metavar="FROM=TO",
        help="pull images of registry FROM (host:port) from TO instead (repeatable)",
    )
    p.add_argument(
        "--dns-listen",
        default=None,
        help=f"ip:port of the node's DNS listener (default {dns.NODE_LISTEN}; 'off': none); "
        "it forwards other names only for this host (loopback or its own address)",
    )
    p.add_argument(
        "--dns-upstream",
        default=None,
        help="comma-separated resolvers for other names (default: the host's resolv.conf; "
        "'none': answer SERVFAIL)",
    )
    p.add_argument(
        "--dns-rate",
        type=_positive_int,
        default=int(dns.DnsSettings.rate),
        help="queries per second one source address may send to one DNS listener, the "
        "node's or a container's (default %(default)s)",
    )
    p.add_argument(
        "--oci-layout-dir",
        action="append",
        default=None,
        type=_absolute_dir,
        metavar="DIR",
        help="a directory whose OCI layouts tasks may run as oci:DIR/... images (repeatable; "
        f"default {', '.join(ImageSettings.oci_layout_dirs)})",
    )
    p.add_argument(
        "--default-pids-limit",
        type=_positive_int,
        default=RuntimeSettings.default_pids_limit,
        help="pids limit of a container whose task sets none (default %(default)s)",
    )
    p.add_argument(
        "--restart-grace",
        type=float,
        default=0.0,
        help="seconds the manager keeps the node after a graceful stop, waiting for the "
        "agent's return (default 0: the manager's default; the manager caps it)",
    )
    p.add_argument("--log-level", default=os.environ.get("ORCH_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    labels = dict(item.split("=", 1) for item in args.label)
    settings = AgentSettings(
        state_dir=args.state_dir,
        managers=args.manager.split(","),
        join_token=args.join_token,
        join_addresses=[a for a in args.join_addr.split(",") if a],
        hostname=args.hostname,
        advertise_addr=args.advertise_addr,
        labels=labels,
        runtime_binary=args.runtime,
        network_prefix=args.network_prefix,
        bridge_subnet=args.bridge_subnet,
        nano_cpus=int(args.cpus * 1e9),
        memory_bytes=args.memory,
        registry_mirrors=dict(args.registry_mirror),
        dns_listen="" if args.dns_listen == "off" else args.dns_listen,
        dns_upstreams=None
        if args.dns_upstream is None
        else [u for u in args.dns_upstream.split(",") if u and u != "none"],
        dns_rate=args.dns_rate,
        restart_grace=args.restart_grace,
        oci_layout_dirs=tuple(args.oci_layout_dir or ImageSettings.oci_layout_dirs),
        default_pids_limit=args.default_pids_limit,
    )
    protect_from_oom()
    raise_fd_limit()
    try:
        asyncio.run(_serve(settings))
    except OrchError as exc:
        log.error("%s", exc)
        sys.exit(1)


AGENT_OOM_SCORE_ADJ = -999
"""The agent's own oom_score_adj: the kernel's OOM killer takes a container's process
long before the agent that supervises it (dockerd runs at -500, containerd at -999).
Containers do not inherit it: their config.json sets oomScoreAdj 0 (runtime/spec.py)."""


def protect_from_oom(
    score: int = AGENT_OOM_SCORE_ADJ, path: str = "/proc/self/oom_score_adj"
) -> int:
    """Lower this process's oom_score_adj to ``score``; returns the value now in force.
    Lowering needs CAP_SYS_RESOURCE: without it the agent runs on unprotected and says so."""
    try:
        with open(path, "w") as f:
            f.write(str(score))
    except OSError as exc:
        log.warning(
            "cannot set the agent's oom_score_adj to %d (%s): the OOM killer may "
            "pick the agent before a container",
            score,
            exc.strerror,
        )
    with open(path) as f:
        return int(f.read().strip())


def _positive_int(text: str) -> int:
    """A value that must be a positive whole number (no "unlimited": see RuntimeSettings)."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: want a positive whole number")
    return int(text)


def _absolute_dir(text: str) -> str:
    """One --oci-layout-dir value: an absolute path."""
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r}: want an absolute directory")
    return text.rstrip("/") or "/"


def _mirror(text: str) -> tuple[str, str]:
    """One --registry-mirror value: FROM=TO, both host[:port]."""
    origin, sep, mirror = text.partition("=")
    if not sep or not origin or not mirror or "/" in text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r}: want FROM=TO, both host[:port]")
    return origin, mirror


async def _serve(settings: AgentSettings) -> None:
    _use_pidfd_child_watcher()
    joins = settings.join_addresses or [join_address_for(m) for m in settings.managers]
    identity = await obtain_identity(
        settings.state_dir, join_token=settings.join_token, join_addresses=joins
    )
    agent = Agent(settings, identity)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    stopping: list[asyncio.Task] = []

    def stop() -> None:
        if stopping:  # a second signal: no more waiting
            main_task.cancel()
        else:
            stopping.append(asyncio.create_task(_stop(agent, main_task), name="agent-stop"))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    with contextlib.suppress(asyncio.CancelledError):
        await agent.run()


async def _stop(agent: Agent, main_task: asyncio.Task) -> None:
    """A graceful stop: Leaving first (bounded), then the agent's ordered shutdown."""
    try:
        await agent.leave()
    finally:
        main_task.cancel()


def _use_pidfd_child_watcher() -> None:
    """Python 3.11 waits for each subprocess on a thread of its own; a pidfd watcher
    waits in the event loop instead (3.12 does this by itself). The agent starts a few
    subprocesses per container, so threads add up when a node starts many at once."""
    if sys.version_info < (3, 12) and hasattr(asyncio, "PidfdChildWatcher"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)
