"""A real orch cluster on one machine: etcd, a registry, managers and agents as processes.

The same harness serves `orch dev up`, the integration tests and the benchmarks. Every
process runs detached in its own session with its log under ``<state_dir>/logs``; what
was started is recorded in ``<state_dir>/cluster.json`` so `orch dev down` (or the next
`up`, after a crash) can stop it and remove what it made: runc containers, mounts,
network namespaces, links and cgroups, found through the per-run prefix and the agents'
state dirs, never by guessing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from orch.cli.config import manager_address_file
from orch.errors import OrchError
from orch.proto import control_pb2, control_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


@dataclass
class ClusterSettings:
    state_dir: Path = Path("/var/lib/orch/dev")
    """Where the cluster keeps everything (etcd data, agents' state, logs, the record)."""
    nodes: int = 1
    """How many agents."""
    managers: int = 1
    """How many managers."""
    prefix: str = ""
    """Per-run name prefix for kernel objects; empty = "orch" + 3 random characters."""
    registry: bool = True
    """Run a local registry (Debian's docker-registry) and push the example images."""
    registry_port: int = 5055
    """Registry port on 127.0.0.1 (0 = any free port); not 5000, where a Debian docker-registry service may already listen."""
    runtime: str = "runc"
    """"runc" or "crun"."""
    restart_delay: float | None = None
    """The managers' default restart delay (seconds); None = orch's default."""
    ready_timeout: float = 60.0
    """Seconds `up` waits for every agent to be ready."""


@dataclass
class ClusterRecord:
    """What `up` started, written to <state_dir>/cluster.json."""

    prefix: str
    state_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    managers: list[str] = field(default_factory=list)
    etcd: str = ""
    registry: str = ""
    agents: list[dict] = field(default_factory=list)  # hostname, state_dir, prefix, cgroup

    def save(self) -> None:
        path = Path(self.state_dir) / "cluster.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterRecord | None:
        path = state_dir / "cluster.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.state_dir = Path(settings.state_dir).resolve()
        prefix = settings.prefix or "orch" + secrets.token_hex(2)[:3]
        self.record = ClusterRecord(prefix=prefix, state_dir=str(self.state_dir))

    @property
    def managers(self) -> list[str]:
        return self.record.managers

    async def up(self) -> ClusterRecord:
        old = ClusterRecord.load(self.state_dir)
        if old is not None and any(_alive(pid) for pid in old.pids.values()):
            raise OrchError(
                f"a local cluster is already running in {self.state_dir} "
                f"(managers {','.join(old.managers)}): `orch dev down` first"
            )
        await down(self.state_dir)  # a crashed earlier run left a record: clear it first
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        self.record.save()
        try:
            await self._start_etcd()
            if self.settings.registry:
                await self._start_registry()
            for i in range(self.settings.managers):
                await self._start_manager(i)
            for i in range(self.settings.nodes):
                await self._start_agent(i)
            self.record.save()
            manager_address_file(self.state_dir).write_text(",".join(self.record.managers) + "\n")
            await self.wait_ready()
        except BaseException:
            await down(self.state_dir)
            raise
        return self.record

    async def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> int:
        logf = open(self.state_dir / "logs" / f"{name}.log", "ab")  # noqa: ASYNC230 (opened once per process)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,  # outlives `orch dev up`; down() ends it
            env={**os.environ, **(env or {})},
        )
        logf.close()
        self.record.pids[name] = proc.pid
        self.record.save()
        return proc.pid

    async def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.record.etcd = f"127.0.0.1:{client}"
        await self._spawn(
            "etcd",
            [
                shutil.which("etcd") or "etcd",
                "--name", "orch-dev",
                "--data-dir", str(self.state_dir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"orch-dev=http://127.0.0.1:{peer}",
                "--log-level", "warn",
            ],
            env={"ETCD_UNSUPPORTED_ARCH": ""},
        )  # fmt: skip
        await _wait_port(client, "etcd", self.settings.ready_timeout)

    async def _start_registry(self) -> None:
        port = self.settings.registry_port or free_port()
        self.record.registry = f"127.0.0.1:{port}"
        config = self.state_dir / "registry.yml"
        config.write_text(
            "version: 0.1\nlog: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.state_dir / 'registry'}}}}}\n"
            f"http: {{addr: 127.0.0.1:{port}}}\n"
        )
        await self._spawn(
            "registry", [shutil.which("docker-registry") or "docker-registry", "serve", str(config)]
        )
        await _wait_port(port, "registry", self.settings.ready_timeout)
        await push_example_images(self.state_dir / "images", self.record.registry)

    async def _start_manager(self, i: int) -> None:
        port = free_port()
        address = f"127.0.0.1:{port}"
        argv = [
            sys.executable, "-m", "orch.manager",
            "--id", f"{self.record.prefix}-m{i}",
            "--listen", address,
            "--etcd", self.record.etcd,
        ]  # fmt: skip
        if self.settings.restart_delay is not None:
            argv += ["--restart-delay", str(self.settings.restart_delay)]
        await self._spawn(f"manager-{i}", argv)
        self.record.managers.append(address)
        await _wait_port(port, f"manager {i}", self.settings.ready_timeout)

    def _agent_spec(self, i: int) -> dict:
        prefix = f"{self.record.prefix}{i}"
        return {
            "hostname": f"node{i + 1}",
            "state_dir": str(self.state_dir / "agents" / f"node{i + 1}"),
            "prefix": prefix,
            "cgroup": f"orch-{prefix}",
            "runc_root": str(self.state_dir / "agents" / f"node{i + 1}" / "runc"),
            # Agents share the root netns in this issue: each bridge gets its own subnet.
            "bridge_subnet": f"10.213.{(sum(self.record.prefix.encode()) % 200) + i}.0/24",
        }

    async def _start_agent(self, i: int) -> None:
        spec = self._agent_spec(i)
        self.record.agents.append(spec)
        argv = [
            sys.executable, "-m", "orch.agent",
            "--state-dir", spec["state_dir"],
            "--manager", ",".join(self.record.managers),
            "--hostname", spec["hostname"],
            "--advertise-addr", "127.0.0.1",
            "--network-prefix", spec["prefix"],
            "--bridge-subnet", spec["bridge_subnet"],
            "--runtime", self.settings.runtime,
        ]  # fmt: skip
        await self._spawn(f"agent-{i}", argv)

    async def wait_ready(self) -> None:
        """Until every agent's node is READY, or ready_timeout passes."""
        want = {a["hostname"] for a in self.record.agents}
        async with grpc.aio.insecure_channel(self.record.managers[0]) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            async with asyncio.timeout(self.settings.ready_timeout):
                while True:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        nodes = (await stub.ListNodes(control_pb2.ListNodesRequest())).nodes
                        ready = {
                            n.description.hostname
                            for n in nodes
                            if n.status.state == types_pb2.NODE_READY
                        }
                        if want <= ready:
                            return
                    await asyncio.sleep(0.1)


async def push_example_images(workdir: Path, registry: str) -> None:
    """Build the example images (deploy/build-images.sh) and push them to the registry."""
    await _run(["bash", str(DEPLOY / "build-images.sh"), str(workdir)])
    await _run(
        [
            "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
            f"oci:{workdir / 'busybox'}:latest", f"docker://{registry}/busybox:latest",
        ]
    )  # fmt: skip


async def _run(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.decode(errors='replace').strip()}")


async def _wait_port(port: int, what: str, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)


async def down(state_dir: Path) -> bool:
    """Stop a local cluster and remove all it made. False when there was none."""
    state_dir = Path(state_dir).resolve()  # noqa: ASYNC240
    record = ClusterRecord.load(state_dir)
    if record is None:
        return False
    # Agents first (so they do not restart what we remove), then managers, etcd last.
    order = sorted(record.pids, key=lambda n: (not n.startswith("agent"), n == "etcd"))
    for name in order:
        await _terminate(record.pids[name])
    from orch.localcluster import cleanup  # runtime and overlay: only needed here

    failures = []
    for agent in record.agents:
        try:
            await cleanup.agent_leftovers(agent)
        except Exception as exc:  # keep removing the rest; say what was left
            failures.append(f"{agent['hostname']}: {exc}")
    if failures:
        raise OrchError("local cluster down left objects behind: " + "; ".join(failures))
    manager_address_file(state_dir).unlink(missing_ok=True)
    for sub in ("etcd", "registry", "agents", "images"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)
    (state_dir / "cluster.json").unlink(missing_ok=True)
    return True


async def sweep_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove what crashed earlier runs left: every ``parent/prefix*`` state dir whose
    record names only dead processes is taken down and deleted. Live clusters (another
    test session, a running demo) are left alone."""
    swept = []
    for state_dir in sorted(Path(parent).glob(prefix + "*")):  # noqa: ASYNC240
        record = ClusterRecord.load(state_dir)
        if record is None and time.time() - state_dir.stat().st_mtime < 600:
            continue  # maybe another run that is only starting
        if record is not None and any(_alive(pid) for pid in record.pids.values()):
            continue
        with contextlib.suppress(Exception):
            await down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
        swept.append(state_dir)
    return swept


async def _terminate(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL after ``grace``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline:
        if not _alive(pid):
            return
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        # Reap if it is our child (tests start clusters in-process).
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(")")[-1].split()[0] == "Z":
                return False
    return True


async def up(settings: ClusterSettings) -> ClusterRecord:
    """Start a local cluster (what `orch dev up` runs)."""
    return await LocalCluster(settings).up()
