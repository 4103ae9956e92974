"""The real Controller: a task as an OCI container (runtime/) in its network endpoint (overlay/).

This is where a Task (protobuf, manager's words) becomes a ContainerConfig (runtime's
words): the spec's command/args/env, the hostname, the resource limits, the orch
environment variables, and the network namespace the endpoint manager made. The
container id is the task id, unique within the agent's runc root.

Networks: the endpoint joins ``Task.networks`` in order (eth0, eth1, ...); on overlay
networks with the address and MAC the manager's allocator wrote into
``Task.attachments``, on the built-in ones (bridge/host/none) as the agent decides.
``Task.ports`` become published ports (DNAT to the first network's address).

DNS: a container with a netns of its own gets the agent's resolver inside it (agent/dns.py)
before it starts, and a resolv.conf naming it; a host-network one gets the host's
resolv.conf. An adopted container (agent restart) gets its resolver back in ``wait``, the
first call the runner makes for it; ``remove`` closes it before the netns goes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orch import model
from orch.agent.health import CheckConfig, ProbeResult, probe_container
from orch.agent.taskrunner import ExitResult, Prepared
from orch.errors import OrchError
from orch.overlay import netns
from orch.overlay.endpoints import EndpointInfo, EndpointManager
from orch.overlay.ports import PortMapping
from orch.proto import objects_pb2
from orch.runtime.containers import ContainerRuntime
from orch.runtime.images import ImageStore
from orch.runtime.model import BindMount, ContainerConfig, Limits

log = logging.getLogger(__name__)


class ContainerController:
    """One task's container. See taskrunner.Controller for the lifecycle rules."""

    def __init__(self, task: objects_pb2.Task, env: ContainerEnvironment) -> None:
        self._task = task
        self._env = env
        self._id = task.id

    async def exists(self) -> bool:
        return self._env.runtime.get(self._id) is not None

    async def prepare(self) -> Prepared:
        image = await self._env.images.pull(self._task.container.image)
        endpoint = await setup_endpoint(self._env.endpoints, self._task)
        await self._env.serve_dns(self._task)
        attachments = [
            objects_pb2.NetworkAttachment(network=a.network, addresses=[a.address], mac=a.mac)
            for a in endpoint.attachments
        ]
        config = container_config(
            self._task,
            node_name=self._env.node_name,
            netns_path=endpoint.netns_path,
            mounts=self._etc_files(attachments),
        )
        await self._env.runtime.create(config, image)
        return Prepared(attachments=attachments)

    async def start(self) -> int:
        return await self._env.runtime.start(self._id)

    async def wait(self) -> ExitResult:
        await self._env.serve_dns(self._task)  # adopted: its resolver comes back here
        status = await self._env.runtime.wait(self._id)
        return ExitResult(
            exit_code=status.exit_code, oom_killed=status.oom_killed, message=status.error or ""
        )

    async def stop(self, grace: float) -> None:
        if await self.exists():
            await self._env.runtime.stop(self._id, grace=grace)

    async def remove(self) -> None:
        await self._env.runtime.remove(self._id)
        await self._env.stop_dns(self._id)
        await self._env.endpoints.teardown(self._id)

    async def probe(self, check: CheckConfig) -> ProbeResult:
        """One health probe (agent/health.py), at the address its endpoint record names."""
        endpoint = self._env.endpoints.info(self._id)
        return await probe_container(self._env.runtime, endpoint, self._id, check)

    def _etc_files(self, attachments: list[objects_pb2.NetworkAttachment]) -> list[BindMount]:
        """/etc/hosts naming the container, and a resolv.conf (service discovery DNS
        will point it at the agent's resolver)."""
        folder = self._env.files_dir / self._id
        folder.mkdir(parents=True, exist_ok=True)
        hostname = hostname_of(self._task, self._env.node_name)
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for a in attachments:
            for addr in a.addresses:
                lines.append(f"{addr.split('/')[0]}\t{hostname}")
        (folder / "hosts").write_text("\n".join(lines) + "\n")
        (folder / "resolv.conf").write_text(self._env.resolv_conf_for(self._task))
        return [
            BindMount(str(folder / "hosts"), "/etc/hosts", readonly=True),
            BindMount(str(folder / "resolv.conf"), "/etc/resolv.conf", readonly=True),
        ]


class ContainerDns(Protocol):
    """The agent's DNS server as containers need it (agent/dns.py DnsServer)."""

    async def attach(self, endpoint_id: str, netns_path: str, networks: Sequence[str]) -> None:
        """Serve a resolver inside the netns for a container on ``networks``."""
        ...

    async def detach(self, endpoint_id: str) -> None: ...


@dataclass(kw_only=True, eq=False)
class ContainerEnvironment:
    """What every task's controller on this agent shares; also the worker's factory."""

    runtime: ContainerRuntime
    images: ImageStore
    endpoints: EndpointManager
    node_name: str
    files_dir: Path
    resolv_conf: str = ""
    """resolv.conf of containers with a netns of their own."""
    dns: ContainerDns | None = None
    host_resolv_conf: str = ""
    """resolv.conf of host-network containers (the host's own)."""

    def __call__(self, task: objects_pb2.Task) -> ContainerController:
        return ContainerController(task, self)

    def resolv_conf_for(self, task: objects_pb2.Task) -> str:
        return (
            self.host_resolv_conf if model.networks_of(task) == [model.HOST] else self.resolv_conf
        )

    async def serve_dns(self, task: objects_pb2.Task) -> None:
        """The task's resolver inside its netns (idempotent). A failure is logged: the
        container still runs, only its name lookups fail."""
        if self.dns is None or model.networks_of(task) == [model.HOST]:
            return
        path = netns.netns_path(self.endpoints.netns_name(task.id))
        try:
            await self.dns.attach(task.id, path, model.networks_of(task))
        except OrchError as exc:
            log.error("task %s: no DNS resolver: %s", task.id, exc)

    async def stop_dns(self, task_id: str) -> None:
        if self.dns is not None:
            await self.dns.detach(task_id)

    async def forget(self, task_id: str) -> None:
        await self.runtime.remove(task_id)
        await self.stop_dns(task_id)
        await self.endpoints.teardown(task_id)
        self.runtime.remove_logs(task_id)
        folder = self.files_dir / task_id
        for name in ("hosts", "resolv.conf"):
            (folder / name).unlink(missing_ok=True)
        if folder.exists():
            folder.rmdir()


def cluster_attachments(task: objects_pb2.Task) -> dict[str, objects_pb2.NetworkAttachment]:
    """Network -> the allocator's attachment, for the task's non-built-in networks."""
    wanted = set(model.cluster_networks(task))
    return {a.network: a for a in task.attachments if a.network in wanted and a.addresses}


def ports_of(task: objects_pb2.Task) -> list[PortMapping]:
    """The task's published ports (mode host; ingress is not built, so it is skipped)."""
    return [
        PortMapping(p.published, p.target, p.protocol or "tcp")
        for p in task.ports
        if (p.mode or "host") == "host"
    ]


async def setup_endpoint(endpoints: EndpointManager, task: objects_pb2.Task) -> EndpointInfo:
    """The task's network endpoint: its networks in order, the allocator's addresses and
    MACs on overlay networks, its published ports."""
    cluster = cluster_attachments(task)
    return await endpoints.setup(
        task.id,
        model.networks_of(task),
        addresses={net: a.addresses[0] for net, a in cluster.items()},
        macs={net: a.mac for net, a in cluster.items() if a.mac},
        ports=ports_of(task),
    )


def hostname_of(task: objects_pb2.Task, node_name: str) -> str:
    """The spec's hostname, else ``<service>-<slot>``; a global service's task (slot 0,
    one per node) is ``<service>-<node>`` (the node name's first label)."""
    if task.container.hostname:
        return task.container.hostname
    if task.slot == 0:
        return f"{task.service_name}-{node_name.split('.')[0]}"
    return f"{task.service_name}-{task.slot}"


def container_config(
    task: objects_pb2.Task,
    *,
    node_name: str,
    netns_path: str | None,
    mounts: list[BindMount],
) -> ContainerConfig:
    """Pure: the runtime's view of a task."""
    spec = task.container
    limits = task.resources.limits
    grace = spec.stop_grace_period
    env = [
        f"ORCH_TASK_ID={task.id}",
        f"ORCH_SERVICE={task.service_name}",
        f"ORCH_SLOT={task.slot}",
        f"ORCH_NODE={node_name}",
        *spec.env,
    ]
    return ContainerConfig(
        id=task.id,
        image=spec.image,
        command=list(spec.command) or None,
        args=list(spec.args) or None,
        env=env,
        workdir=spec.workdir or None,
        hostname=hostname_of(task, node_name),
        user=spec.user or None,
        labels={
            **dict(spec.labels),
            "orch.task.id": task.id,
            "orch.service": task.service_name,
            "orch.slot": str(task.slot),
        },
        limits=Limits(
            nano_cpus=limits.nano_cpus, memory_bytes=limits.memory_bytes, pids=limits.pids
        ),
        netns_path=netns_path,
        mounts=mounts,
        stop_signal=spec.stop_signal or None,
        stop_grace_seconds=(grace.seconds + grace.nanos / 1e9)
        if (grace.seconds or grace.nanos)
        else None,
    )
