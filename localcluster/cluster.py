"""A real multi-host orch cluster on one machine: etcd, a registry, managers, and agents
each inside its own network namespace ("host") on an underlay bridge (localcluster/hosts.py).

The same harness serves `orch dev up`, the integration tests and the benchmarks. etcd,
the registry and the managers run in the root netns and listen on the underlay's gateway
address, which the CLI (root netns) and the agents (their hosts) both reach. Agents run
under ``nsenter --net`` with their host's underlay address as advertise address, and pull
``127.0.0.1:<port>/...`` images (what manifests name) through a registry mirror on the
gateway, since 127.0.0.1 inside a host is that host's own loopback.

Every process runs detached in its own session with its log under ``<state_dir>/logs``;
what was started and made is recorded in ``<state_dir>/cluster.json`` (before it is
made) so `orch dev down`, or the next `up` after a crash, can stop it and remove it all:
containers, mounts, cgroups, netns, links, the bridge. Found through the record and the
per-run prefix, never by guessing.
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
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import grpc

from orch.agent.identity import tls_dir
from orch.errors import OrchError
from orch.identity import channels
from orch.identity.channels import ClientTLS, load_admin_tls
from orch.identity.etcdpki import EtcdClientTLS
from orch.localcluster import etcd, hosts
from orch.localcluster.paths import DEFAULT_STATE_DIR, manager_address_file
from orch.overlay import names
from orch.overlay.netns import list_netns
from orch.overlay.settings import bridge_subnet_for
from orch.proto import control_pb2, control_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


@dataclass
class ClusterSettings:
    state_dir: Path = DEFAULT_STATE_DIR
    """Where the cluster keeps everything (etcd data, agents' state, logs, the record)."""
    nodes: int = 3
    """How many hosts, each a netns with one agent."""
    managers: int = 1
    """How many managers."""
    etcd_members: int = 1
    """How many etcd members form the cluster store: 1, or 3 (or 5) to lose members and
    quorum on purpose (``stop_etcd_member``)."""
    prefix: str = ""
    """Per-run name prefix for kernel objects; empty = "orch" + 3 random characters."""
    registry: bool = True
    """Run a local registry (Debian's docker-registry) and push the example images."""
    registry_port: int = 5055
    """Registry port (0 = any free port); not 5000, where a Debian docker-registry service
    may already listen. Images are named 127.0.0.1:<port>/...; the registry listens on the
    underlay gateway, the agents' mirror of that name."""
    runtime: str = "runc"
    """"runc" or "crun"."""
    liveness_ttl: int | None = None
    """The managers' node liveness TTL (seconds); None = orch's default (2)."""
    restart_delay: float | None = None
    """The managers' default restart delay (seconds); None = orch's default."""
    agent_args: tuple[str, ...] = ()
    """Extra flags for every agent (benchmarks lift a limit with them)."""
    ready_timeout: float = 60.0
    """Seconds `up` waits for every agent to be ready."""
    cert_lifetime: str | None = None
    """Node certificate lifetime for `orch-manager init --cert-lifetime` (e.g. "2m");
    None = orch's default (90 days)."""


@dataclass
class ClusterRecord:
    """What `up` started, written to <state_dir>/cluster.json."""

    prefix: str
    state_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    managers: list[str] = field(default_factory=list)
    etcd: str = ""
    """The etcd client endpoints, comma-separated (what managers take as ``--etcd``)."""
    etcd_members: list[dict] = field(default_factory=list)
    """One per etcd member: name, client and peer address, data dir (etcd.py)."""
    etcdctl: list[str] = field(default_factory=list)
    """etcdctl's TLS flags as the harness (``--cacert``, ``--cert``, ``--key``): etcd
    admits only clients with a certificate of its own CA."""
    registry: str = ""
    """The registry as manifests name it (127.0.0.1:<port>)."""
    registry_mirror: str = ""
    """Where it listens, and where agents pull its images from (<gateway>:<port>)."""
    underlay: dict = field(default_factory=dict)
    """bridge, subnet, gateway."""
    agents: list[dict] = field(default_factory=list)
    """One per host: hostname, state_dir, prefix, cgroup, runc_root, bridge_subnet, and the
    host's netns, veth (root end) and underlay address."""
    join_addresses: list[str] = field(default_factory=list)
    """Each manager's plaintext join port (host:port), in the order of ``managers``."""
    tokens: dict = field(default_factory=dict)
    """The join tokens `orch-manager init` printed: worker, manager (for tests)."""
    tls_dir: str = ""
    """The admin credentials (ca.pem, admin.pem, admin-key.pem): <state_dir>/tls."""

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
        # Fields this version does not know (a record of a newer run) are left out, so
        # a sweep or `down` of that run still works.
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalCluster:
    """One run: ``up()`` makes and starts it all (and takes it down again if that fails),
    ``down(state_dir)`` ends it. ``host``/``host_argv``/``run_on`` reach into a host's
    netns, which the root netns cannot see into (tests, the demo, debugging)."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.state_dir = Path(settings.state_dir).resolve()
        self.record = ClusterRecord(
            prefix=settings.prefix or _random_prefix(), state_dir=str(self.state_dir)
        )

    @property
    def managers(self) -> list[str]:
        return self.record.managers

    def tls(self) -> ClientTLS:
        """The admin credentials `up` keeps in ``<state_dir>/tls``."""
        return load_admin_tls(Path(self.record.tls_dir))

    def host(self, hostname: str) -> dict:
        """The record of host ``hostname`` (node1, node2, ...)."""
        for agent in self.record.agents:
            if agent["hostname"] == hostname:
                return agent
        raise OrchError(f"no host {hostname!r} in local cluster {self.record.prefix}")

    def host_argv(self, hostname: str, argv: list[str]) -> list[str]:
        """``argv`` to run inside host ``hostname``'s netns (mount namespace shared)."""
        return hosts.nsenter_argv(self.host(hostname)["netns"], argv)

    def run_on(
        self, hostname: str, argv: list[str], *, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside host ``hostname`` and wait for it (blocking: for tests and
        scripts, not for the event loop)."""
        return subprocess.run(
            self.host_argv(hostname, argv), capture_output=True, text=True, timeout=timeout
        )

    async def up(self) -> ClusterRecord:
        old = ClusterRecord.load(self.state_dir)
        if old is not None and any(_alive(pid) for pid in old.pids.values()):
            raise OrchError(
                f"a local cluster is already running in {self.state_dir} "
                f"(managers {','.join(old.managers)}): `orch dev down` first"
            )
        await down(self.state_dir)  # a crashed earlier run left a record: clear it first
        self._check_settings()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        self.record.save()
        try:
            await self._make_underlay()
            await self._start_etcd()
            if self.settings.registry:
                await self._start_registry()
            for i in range(self.settings.managers):
                await self._start_manager(i)
            for n in range(1, self.settings.nodes + 1):
                await self._make_host(n)
                await self._start_agent(n)
            self.record.save()
            manager_address_file(self.state_dir).write_text(",".join(self.record.managers) + "\n")
            await self.wait_ready()
        except BaseException:
            await down(self.state_dir)
            raise
        return self.record

    def _check_settings(self) -> None:
        nodes = self.settings.nodes
        if not 1 <= nodes <= hosts.MAX_HOSTS:
            raise OrchError(f"nodes: want 1-{hosts.MAX_HOSTS}, got {nodes}")
        # Agent n's own prefix (for its netns and links) is <prefix><n>, and short.
        if len(f"{self.record.prefix}{nodes}") > names.PREFIX_MAX:
            most = 10 ** (names.PREFIX_MAX - len(self.record.prefix)) - 1
            raise OrchError(f"nodes: at most {most} with prefix {self.record.prefix!r}")
        names.check_prefix(f"{self.record.prefix}{nodes}")
        if self.settings.etcd_members not in etcd.MEMBER_COUNTS:
            raise OrchError(
                f"etcd_members: want one of {', '.join(map(str, etcd.MEMBER_COUNTS))} "
                f"(odd, for a majority), got {self.settings.etcd_members}"
            )

    async def _make_underlay(self) -> None:
        """Pick a free prefix and subnet and make the bridge, under the cross-run lock."""
        async with hosts.underlay_lock():
            links, netns = await hosts.root_links(), list_netns("")
            for _ in range(32):
                if not hosts.prefix_in_use(self.record.prefix, links, netns):
                    break
                if self.settings.prefix:
                    raise OrchError(f"prefix {self.record.prefix!r} is in use by another run")
                self.record.prefix = _random_prefix()
            else:
                raise OrchError("no free local cluster prefix found")
            seed = sum(self.record.prefix.encode())
            k = hosts.pick_subnet_index(await hosts.root_addresses(), seed)
            subnet = str(hosts.underlay_subnet(k))
            self.record.underlay = {
                "bridge": hosts.bridge_name(self.record.prefix),
                "subnet": subnet,
                "gateway": hosts.gateway_address(subnet),
            }
            self.record.save()  # before the bridge exists: a crash leaves it recorded
            await hosts.create_underlay(self.record.underlay["bridge"], subnet)

    @property
    def gateway(self) -> str:
        return self.record.underlay["gateway"]

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
        """Start every etcd member (processes ``etcd-<i>``) and wait until the cluster
        answers a linearizable read, i.e. has elected a leader. Its PKI is made first:
        etcd speaks TLS only, with client certificates of its own CA (etcd.make_pki)."""
        members = etcd.member_specs(self.gateway, self.settings.etcd_members, self.state_dir)
        self.record.etcd_members = members
        self.record.etcd = ",".join(m["client"] for m in members)
        self.record.save()
        await asyncio.to_thread(etcd.make_pki, self.state_dir, members)
        self.record.etcdctl = etcd.etcdctl_flags(self.state_dir)
        for i in range(len(members)):
            await self._spawn_etcd(i, new=True)
        for i, member in enumerate(members):
            host, port = member["client"].rsplit(":", 1)
            await _wait_port(host, int(port), f"etcd member {i}", self.settings.ready_timeout)
        await etcd.wait_answers(
            self.record.etcd.split(","),
            self.settings.ready_timeout,
            "the etcd cluster",
            tls=self.etcd_tls(),
        )

    async def _spawn_etcd(self, i: int, *, new: bool) -> None:
        argv = etcd.member_argv(
            self.record.etcd_members,
            i,
            token=f"orch-{self.record.prefix}",
            new=new,
            pki=etcd.pki_dir(self.state_dir),
        )
        await self._spawn(f"etcd-{i}", argv, env={"ETCD_UNSUPPORTED_ARCH": ""})

    async def stop_etcd_member(self, i: int, *, crash: bool = True) -> None:
        """Stop etcd member i (0-based): SIGKILL when ``crash`` (as if its machine died),
        else SIGTERM. Its data dir stays for ``start_etcd_member``. Managers go on
        through the other members while a majority is left."""
        if f"etcd-{i}" not in self.record.pids:
            raise OrchError(f"etcd member {i} is not running")
        await self._stop_process(f"etcd-{i}", crash=crash)
        # A dead pid must not stay recorded: its number may be reused before `down`.
        del self.record.pids[f"etcd-{i}"]
        self.record.save()

    async def start_etcd_member(self, i: int, *, wait: bool = True) -> None:
        """Start a stopped etcd member again with its data dir; it rejoins the cluster.
        ``wait``: until it answers a linearizable read itself (it caught up with a
        leader, so a majority is up); else only until it listens."""
        pid = self.record.pids.get(f"etcd-{i}")
        if pid is not None and _alive(pid):
            raise OrchError(f"etcd member {i} is already running (pid {pid})")
        await self._spawn_etcd(i, new=False)
        member = self.record.etcd_members[i]
        host, port = member["client"].rsplit(":", 1)
        await _wait_port(host, int(port), f"etcd member {i}", self.settings.ready_timeout)
        if wait:
            await etcd.wait_answers(
                [member["client"]],
                self.settings.ready_timeout,
                f"etcd member {i}",
                tls=self.etcd_tls(),
            )

    async def etcd_leader(self) -> int | None:
        """The index of the etcd member that leads now; None without quorum."""
        return await etcd.leader_index(self.record.etcd_members, tls=self.etcd_tls())

    def etcd_tls(self) -> EtcdClientTLS:
        """The harness's etcd client material (tests, chaos, benches reach etcd with it)."""
        return etcd.client_tls(self.state_dir)

    def etcdctl_argv(self, endpoints: str | None = None) -> list[str]:
        """etcdctl up to its command, over TLS as the harness, at ``endpoints`` (default:
        every member)."""
        return etcd.etcdctl_argv(self.state_dir, endpoints or self.record.etcd)

    async def _start_registry(self) -> None:
        ip = self.gateway
        port = self.settings.registry_port or free_port(ip)
        self.record.registry = f"127.0.0.1:{port}"
        self.record.registry_mirror = f"{ip}:{port}"
        config = self.state_dir / "registry.yml"
        config.write_text(
            "version: 0.1\nlog: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.state_dir / 'registry'}}}}}\n"
            f"http: {{addr: {ip}:{port}}}\n"
        )
        await self._spawn(
            "registry", [shutil.which("docker-registry") or "docker-registry", "serve", str(config)]
        )
        await _wait_port(ip, port, "registry", self.settings.ready_timeout)
        await push_example_images(self.state_dir / "images", self.record.registry_mirror)

    async def _init_cluster(self) -> None:
        """`orch-manager init` for manager 0: the CA and tokens in etcd, manager 0's
        certificate, the admin credentials in <state_dir>/tls; the tokens are recorded."""
        self.record.tls_dir = str(self.state_dir / "tls")
        self.record.save()
        argv = [
            sys.executable, "-m", "orch.manager", "init",
            "--etcd", self.record.etcd,
            *etcd.manager_flags(self.state_dir, f"{self.record.prefix}-m0"),
            "--state-dir", str(self._manager_state(0)),
            "--admin-tls-dir", self.record.tls_dir,
        ]  # fmt: skip
        if self.settings.cert_lifetime is not None:
            argv += ["--cert-lifetime", self.settings.cert_lifetime]
        out = await _output(argv)
        tokens = dict(line.split(" token:", 1) for line in out.splitlines() if " token:" in line)
        self.record.tokens = {role: token.strip() for role, token in tokens.items()}
        self.record.save()

    def _manager_state(self, i: int) -> Path:
        return self.state_dir / "manager-state" / f"m{i}"

    async def _start_manager(self, i: int) -> None:
        """Start manager i; a restart keeps its addresses (agents and the CLI know them).
        Manager 0 of a new cluster runs init first; the others join with the manager
        token on their first start (later starts reuse their certificates)."""
        if i == len(self.record.managers):
            self.record.managers.append(f"{self.gateway}:{free_port(self.gateway)}")
            self.record.join_addresses.append(f"{self.gateway}:{free_port(self.gateway)}")
            if i == 0:
                await self._init_cluster()
        address = self.record.managers[i]
        port = int(address.rsplit(":", 1)[1])
        argv = [
            sys.executable, "-m", "orch.manager",
            "--id", f"{self.record.prefix}-m{i}",
            "--listen", address,
            "--join-listen", self.record.join_addresses[i],
            "--state-dir", str(self._manager_state(i)),
            "--etcd", self.record.etcd,
            *etcd.manager_flags(self.state_dir, f"{self.record.prefix}-m{i}"),
        ]  # fmt: skip
        env = {}
        if i > 0:
            argv += ["--join", ",".join(self.record.join_addresses[:i])]
            env["ORCH_JOIN_TOKEN"] = self.record.tokens["manager"]
        if self.settings.restart_delay is not None:
            argv += ["--restart-delay", str(self.settings.restart_delay)]
        if self.settings.liveness_ttl is not None:
            argv += ["--liveness-ttl", str(self.settings.liveness_ttl)]
        await self._spawn(f"manager-{i}", argv, env=env)
        await _wait_port(self.gateway, port, f"manager {i}", self.settings.ready_timeout)

    def _agent_spec(self, n: int) -> dict:
        """Host and agent n (1-based: node1 is <prefix>-h1 at .11 with agent prefix <prefix>1)."""
        prefix = self.record.prefix
        hostname = f"node{n}"
        state = self.state_dir / "agents" / hostname
        subnet = self.record.underlay["subnet"]
        return {
            "hostname": hostname,
            "state_dir": str(state),
            "prefix": f"{prefix}{n}",
            "cgroup": f"orch-{prefix}{n}",
            "runc_root": str(state / "runc"),
            # Each host has its own bridge; distinct subnets keep `orch ps` unambiguous.
            "bridge_subnet": bridge_subnet_for((sum(prefix.encode()) + n - 1) % 200),
            "netns": hosts.host_netns(prefix, n),
            "veth": hosts.host_veth(prefix, n),
            "address": hosts.host_address(subnet, n),
        }

    async def _make_host(self, n: int) -> None:
        spec = self._agent_spec(n)
        self.record.agents.append(spec)
        self.record.save()  # before the netns exists: a crash leaves it recorded
        await hosts.create_host(
            bridge=self.record.underlay["bridge"],
            netns=spec["netns"],
            veth=spec["veth"],
            address=spec["address"],
            subnet=self.record.underlay["subnet"],
        )

    async def _start_agent(self, n: int) -> None:
        spec = self.record.agents[n - 1]
        argv = [
            sys.executable, "-m", "orch.agent",
            "--state-dir", spec["state_dir"],
            "--manager", ",".join(self.record.managers),
            "--join-addr", ",".join(self.record.join_addresses),
            "--hostname", spec["hostname"],
            "--advertise-addr", spec["address"],
            "--network-prefix", spec["prefix"],
            "--bridge-subnet", spec["bridge_subnet"],
            "--runtime", self.settings.runtime,
            # Tests and `dig` from the machine ask each host at its address.
            "--dns-listen", f"{spec['address']}:53",
            *self.settings.agent_args,
        ]  # fmt: skip
        if self.record.registry:
            argv += ["--registry-mirror", f"{self.record.registry}={self.record.registry_mirror}"]
        # nsenter, not `ip netns exec`: the agent must share our mount namespace. The
        # token is needed on the first start only, and passed in the environment, not argv.
        env = {"ORCH_JOIN_TOKEN": self.record.tokens["worker"]}
        await self._spawn(f"agent-{n}", hosts.nsenter_argv(spec["netns"], argv), env=env)

    async def kill_agent(self, hostname: str, *, crash: bool = True) -> None:
        """Stop one agent: SIGKILL when ``crash`` (as if it died), else SIGTERM. Its
        containers keep running under their shims."""
        await self._stop_process(f"agent-{self._host_number(hostname)}", crash=crash)

    async def kill_manager(self, i: int, *, crash: bool = True) -> None:
        """Stop manager i (0-based): SIGKILL when ``crash``, else SIGTERM."""
        await self._stop_process(f"manager-{i}", crash=crash)

    async def start_manager(self, i: int) -> None:
        """Start a stopped manager again, at the same address."""
        await self._start_manager(i)

    async def _stop_process(self, name: str, *, crash: bool) -> None:
        """Signal a recorded process and wait until it is gone (and reaped)."""
        from orch.runtime.containers import wait_pid_exit  # only needed here

        pid = self.record.pids[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if crash else signal.SIGTERM)
        async with asyncio.timeout(self.settings.ready_timeout):
            await wait_pid_exit(pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG: reaps our child, never blocks)

    async def start_agent(self, hostname: str, *, rejoin: bool = False) -> None:
        """Start a stopped agent again with the same settings; it adopts its containers.
        ``rejoin``: its TLS identity is dropped first, so it joins again with the worker
        token as a new node (what a node removed with `orch node rm` must do: its old
        certificate is refused from then on)."""
        n = self._host_number(hostname)
        if rejoin:
            shutil.rmtree(tls_dir(Path(self._agent_spec(n)["state_dir"])), ignore_errors=True)
        await self._start_agent(n)

    async def cut_host(self, hostname: str) -> None:
        """Cut host ``hostname`` off the underlay (its link down, as if its cable was
        pulled): its agent and containers run on and reach nothing outside the host."""
        await hosts.set_link_up(self.host(hostname)["veth"], False)

    async def heal_host(self, hostname: str) -> None:
        """Undo ``cut_host``."""
        await hosts.set_link_up(self.host(hostname)["veth"], True)

    def _host_number(self, hostname: str) -> int:
        return next(i for i, a in enumerate(self.record.agents, 1) if a["hostname"] == hostname)

    async def wait_ready(self) -> None:
        """Until every agent's node is READY, or ready_timeout passes."""
        want = {a["hostname"] for a in self.record.agents}
        async with channels.aio_channel(self.record.managers[0], self.tls()) as channel:
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


def _random_prefix() -> str:
    return "orch" + secrets.token_hex(2)[:3]


async def push_example_images(workdir: Path, registry: str) -> None:
    """Build the example images (deploy/build-images.sh) and push them to the registry."""
    await _run(["bash", str(DEPLOY / "build-images.sh"), str(workdir)])
    await _run(
        [
            "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
            f"oci:{workdir / 'busybox'}:latest", f"docker://{registry}/busybox:latest",
        ]
    )  # fmt: skip


async def _output(argv: list[str]) -> str:
    """Run ``argv``; its stdout, or RuntimeError with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


async def _run(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.decode(errors='replace').strip()}")


async def _wait_port(host: str, port: int, what: str, timeout: float) -> None:
    try:
        await _connectable(host, port, timeout)
    except TimeoutError as exc:
        raise OrchError(f"{what} did not listen on {host}:{port} within {timeout:g}s") from exc


async def _connectable(host: str, port: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)


async def down(state_dir: Path) -> bool:
    """Stop a local cluster and remove all it made. False when there was none.

    Order: agents (so nothing restarts what we remove), their containers and endpoints
    (inside each host's netns), managers and the registry, etcd, then the hosts and the
    bridge. Every step runs even if an earlier one failed; what could not be removed is
    raised at the end and the record kept, so another `down` can finish the job."""
    state_dir = Path(state_dir).resolve()  # noqa: ASYNC240
    record = ClusterRecord.load(state_dir)
    if record is None:
        return False
    agents = sorted(n for n in record.pids if n.startswith("agent"))
    # etcd last ("etcd" in records of one-member runs, "etcd-<i>" since).
    others = sorted((n for n in record.pids if n not in agents), key=lambda n: n.startswith("etcd"))
    for name in agents:
        await _terminate(record.pids[name])
    from orch.localcluster import cleanup  # runtime and overlay: only needed here

    failures = []
    for agent in record.agents:
        try:
            await cleanup.agent_leftovers(agent)
        except Exception as exc:  # keep removing the rest; say what was left
            failures.append(f"{agent['hostname']}: {exc}")
    for name in others:
        await _terminate(record.pids[name])
    for agent in record.agents:
        if "netns" in agent:  # records of single-netns runs have no hosts
            try:
                await hosts.delete_host(agent["netns"], agent["veth"])
            except Exception as exc:
                failures.append(f"host {agent['netns']}: {exc}")
    if record.underlay:
        try:
            await hosts.delete_link(record.underlay["bridge"])
        except Exception as exc:
            failures.append(f"bridge {record.underlay['bridge']}: {exc}")
    if failures:
        raise OrchError("local cluster down left objects behind: " + "; ".join(failures))
    manager_address_file(state_dir).unlink(missing_ok=True)
    for sub in ("etcd", "etcd-pki", "registry", "agents", "images", "manager-state", "tls"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)
    (state_dir / "cluster.json").unlink(missing_ok=True)
    return True


async def sweep_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove what crashed earlier runs left: every ``parent/prefix*`` state dir whose
    record names only dead processes is taken down and deleted. Live clusters (another
    test session, a running demo) are left alone."""
    swept = []
    for state_dir in sorted(Path(parent).glob(prefix + "*")):  # noqa: ASYNC240
        try:
            record = ClusterRecord.load(state_dir)
        except (TypeError, ValueError):
            continue  # a record this version cannot read (another checkout's): not ours
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
