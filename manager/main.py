"""The manager process: wires store, view, APIs and the leader's control loops together
(orchestrator, allocator, scheduler, node monitor).

Every manager serves the Control and Dispatcher APIs (plus certificate renewal, the CA's
administration, gRPC health and reflection) from its own ClusterView, on one mutual-TLS
port, and the CA's join service on a plaintext join port (docs/identity.md). Its TLS
identity comes from its state dir: made by `orch-manager init` (the first manager) or by
joining once with a manager token. One manager at a time wins the election and also runs the
control loops; losing the election cancels them. Shutdown is ordered: stop taking calls,
stop the loops, resign, close etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from orch.errors import IdentityError, OrchError, ValidationError
from orch.identity import channels
from orch.identity.ca import NODE_VALIDITY
from orch.identity.etcdpki import EtcdClientTLS, check_endpoints
from orch.manager import authz, etcd_pki
from orch.manager.allocator.ipam import IpamSettings
from orch.manager.allocator.loop import AllocatorLoop
from orch.manager.ca.records import ClusterCA, check_cert_lifetime, set_cert_lifetime
from orch.manager.ca.service import ClusterCAService, NodeCAService, NodeCertificatesService
from orch.manager.ca.tls import ManagerIdentity, init_cluster, obtain_identity
from orch.manager.controlapi.server import ControlAPI, ControlSettings
from orch.manager.dispatcher.server import Dispatcher
from orch.manager.dispatcher.settings import RESTART_GRACE_MAX, DispatcherSettings
from orch.manager.loop import LoopSettings
from orch.manager.nodes.core import NodeMonitorSettings
from orch.manager.nodes.loop import NodeMonitorLoop
from orch.manager.orchestrator.loop import OrchestratorLoop
from orch.manager.orchestrator.plan import OrchestratorSettings
from orch.manager.scheduler.loop import SchedulerLoop
from orch.manager.state.api import Store
from orch.manager.state.election import Election, ElectionSettings
from orch.manager.state.presence import announce
from orch.manager.state.store import EtcdStore
from orch.manager.state.view import ClusterView
from orch.manager.streams.execbroker import ExecBroker, ExecSettings
from orch.manager.streams.forwarding import ForwardSettings, SessionRouter
from orch.manager.streams.logbroker import LogBroker
from orch.proto import (
    ca_pb2,
    ca_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
)

log = logging.getLogger("orch.manager")


@dataclass
class ManagerSettings:
    manager_id: str
    """Unique per manager; the value of the leader key while this manager leads."""
    listen: str = "127.0.0.1:7700"
    """host:port of the mTLS port: Control, Dispatcher, renewal, health, reflection."""
    state_dir: Path = Path("/var/lib/orch/manager")
    """Where the manager keeps its TLS identity (``tls/``)."""
    join_listen: str | None = None
    """host:port of the plaintext join port (NodeCA); None = the listen port plus one."""
    join_token: str = ""
    """A manager join token, needed once: the first start of a further manager."""
    join: list[str] = field(default_factory=list)
    """Join ports of running managers, for that first start."""
    advertise_addr: str = ""
    """host[:port] other managers (forwarding) and `orch managers` reach this manager at;
    the port defaults to the mTLS port's. Empty: the --listen address, which must then
    name one address (not 0.0.0.0 or ::)."""
    cert_lifetime: timedelta | None = None
    """A new node certificate lifetime for the cluster (a setting in the store, read by
    the CA at every issue); None = leave it as it is."""
    etcd: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    """etcd client endpoints."""
    etcd_tls: EtcdClientTLS | None = None
    """The etcd CA and this manager's etcd client certificate: required to connect (there
    is no plaintext etcd); only a manager handed a ``store`` runs without."""
    election: ElectionSettings = field(default_factory=ElectionSettings)
    dispatcher: DispatcherSettings = field(default_factory=DispatcherSettings)
    loops: LoopSettings = field(default_factory=LoopSettings)
    orchestrator: OrchestratorSettings = field(default_factory=OrchestratorSettings)
    nodemonitor: NodeMonitorSettings = field(default_factory=NodeMonitorSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    """The Control API's tunables, among them the address pool of networks."""
    execs: ExecSettings = field(default_factory=ExecSettings)
    """`orch exec` through the agents' sessions."""
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    """Logs and exec calls handed on to the manager holding a node's session."""


class Manager:
    def __init__(self, settings: ManagerSettings) -> None:
        self.settings = settings
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.join_port = 0
        self.identity: ManagerIdentity | None = None

    async def run(self, started: asyncio.Event | None = None, store: Store | None = None) -> None:
        """Serve until cancelled. ``store``: the store to use instead of connecting to
        ``settings.etcd`` (tests run a whole manager on a MemoryStore); closed on exit
        all the same."""
        s = self.settings
        check_advertise(s)
        if store is None:
            if s.etcd_tls is None:
                raise OrchError("no etcd TLS material: etcd is spoken to over TLS only")
            store = await EtcdStore.connect(s.etcd, tls=s.etcd_tls)
        try:
            identity = await obtain_identity(
                store, s.state_dir, join_token=s.join_token, join_addresses=s.join
            )
            if s.cert_lifetime is not None:
                await set_cert_lifetime(store, s.cert_lifetime)
        except BaseException:
            await store.close()
            raise
        self.identity = identity
        view = ClusterView(store)
        logs = LogBroker()
        execs = ExecBroker(s.execs)
        election = Election(store, s.manager_id, s.election)
        shared = dict(store=store, view=view, logs=logs)  # what both servers stand on
        dispatcher = Dispatcher(
            **shared, manager_id=s.manager_id, settings=s.dispatcher, execs=execs
        )
        router = SessionRouter(
            view=view,
            logs=logs,
            execs=execs,
            manager_id=s.manager_id,
            settings=s.forward,
            open_channel=lambda address: channels.aio_channel(address, identity.client_tls()),
        )
        control = ControlAPI(**shared, settings=s.control, leader=election.leader, router=router)

        def fence():
            return election.fence

        loop_args = dict(store=store, view=view, fence=fence, settings=s.loops)

        async def lead() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(OrchestratorLoop(**loop_args, settings_core=s.orchestrator).run())
                tg.create_task(AllocatorLoop(**loop_args).run())
                tg.create_task(SchedulerLoop(**loop_args).run())
                tg.create_task(
                    NodeMonitorLoop(
                        **loop_args,
                        settings_core=s.nodemonitor,
                        liveness_ttl=s.dispatcher.liveness_ttl,
                    ).run()
                )

        # Every call on the mTLS port is authorized before its handler runs (authz.POLICY).
        server = grpc.aio.server(
            options=channels.server_options(),
            interceptors=authz.server_interceptors(
                identity.identity.cluster_id, authz.StoreDenyList(view)
            ),
        )
        ca_pb2_grpc.add_NodeCertificatesServicer_to_server(NodeCertificatesService(store), server)
        ca_pb2_grpc.add_ClusterCAServicer_to_server(ClusterCAService(store), server)
        control_pb2_grpc.add_ControlServicer_to_server(control, server)
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (
            control_pb2.DESCRIPTOR.services_by_name["Control"].full_name,
            dispatcher_pb2.DESCRIPTOR.services_by_name["Dispatcher"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            ca_pb2.DESCRIPTOR.services_by_name["NodeCertificates"].full_name,
            ca_pb2.DESCRIPTOR.services_by_name["ClusterCA"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        self.port = server.add_secure_port(s.listen, channels.server_credentials(identity.current))
        self.server = server
        # The join port: plaintext by design (ca.proto), NodeCA only.
        join_server = grpc.aio.server(options=channels.server_options())
        ca_pb2_grpc.add_NodeCAServicer_to_server(NodeCAService(store), join_server)
        self.join_port = join_server.add_insecure_port(join_listen_for(s))

        tasks = [
            asyncio.create_task(view.run(), name="view"),
            asyncio.create_task(dispatcher.status.run(), name="status-writer"),
            asyncio.create_task(election.run(lead), name="election"),
            asyncio.create_task(
                announce(store, s.manager_id, advertised(s, self.port), ttl=s.election.lease_ttl),
                name="presence",
            ),
            asyncio.create_task(identity.renew_forever(store), name="renewal"),
        ]
        try:
            await view.ready()
            await server.start()
            await join_server.start()
            await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            log.info(
                "manager %s (node %s) serving on %s, join port %s",
                s.manager_id,
                identity.identity.node_id,
                s.listen,
                self.join_port,
            )
            if started:
                started.set()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
        finally:
            await join_server.stop(grace=None)
            await server.stop(grace=1.0)
            for t in reversed(tasks):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await store.close()


_ANY = ("0.0.0.0", "::", "[::]", "")


def advertised(settings: ManagerSettings, port: int) -> str:
    """The address this manager announces (presence): ``advertise_addr``, its port
    defaulting to ``port`` (the bound mTLS port), else the listen host with ``port``."""
    if settings.advertise_addr:
        host, sep, given = settings.advertise_addr.rpartition(":")
        if sep and given.isdigit() and not host.endswith(":"):
            return settings.advertise_addr
        return f"{settings.advertise_addr}:{port}"
    return f"{settings.listen.rpartition(':')[0]}:{port}"


def check_advertise(settings: ManagerSettings) -> None:
    """An address others can dial must be known: a wildcard listen needs --advertise-addr."""
    host = settings.listen.rpartition(":")[0]
    if host in _ANY and not settings.advertise_addr:
        raise ValidationError(
            f"--listen {settings.listen} is every address of this host: pass "
            "--advertise-addr with the one other managers and the CLI reach it at"
        )


def join_listen_for(settings: ManagerSettings) -> str:
    """The join port's address: ``join_listen``, else the listen host with the listen port
    plus one (port 0, any free port, stays 0)."""
    if settings.join_listen:
        return settings.join_listen
    host, _, port = settings.listen.rpartition(":")
    return f"{host}:{int(port) + 1 if int(port) else 0}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["etcd-pki"]:  # the operator's tool for etcd's own PKI
        sys.exit(etcd_pki.main(argv[1:]))
    if argv[:1] == ["init"]:
        init_main(argv[1:])
        return
    p = argparse.ArgumentParser(
        prog="orch-manager",
        description="Run an orch manager. `orch-manager init` first creates the cluster; "
        "`orch-manager etcd-pki --help`: make etcd's PKI.",
    )
    p.add_argument("--id", default=os.environ.get("ORCH_MANAGER_ID") or socket.gethostname())
    p.add_argument("--listen", default="127.0.0.1:7700", help="host:port of the mTLS port")
    p.add_argument(
        "--advertise-addr",
        default="",
        help="host[:port] other managers and the CLI reach this one at (default: the "
        "--listen address; required when that is 0.0.0.0 or ::)",
    )
    p.add_argument(
        "--join-listen",
        default=None,
        help="host:port of the plaintext join port (default: the --listen port plus one)",
    )
    p.add_argument("--state-dir", type=Path, default=ManagerSettings.state_dir)
    p.add_argument(
        "--join-token",
        default=os.environ.get("ORCH_JOIN_TOKEN", ""),
        help="a manager join token: needed on the first start of a further manager only "
        "(or $ORCH_JOIN_TOKEN)",
    )
    p.add_argument(
        "--join",
        default="",
        help="comma-separated join ports (host:port) of running managers, with --join-token",
    )
    p.add_argument(
        "--cert-lifetime",
        type=_lifetime,
        default=None,
        help="set the cluster's node certificate lifetime: seconds, or with a unit s/m/h/d "
        "(at least 1m; default: leave it, 90d from init)",
    )
    _add_etcd_flags(p)
    p.add_argument("--restart-delay", type=float, default=None, help="seconds (default 5)")
    p.add_argument(
        "--address-pool",
        default=None,
        help=f"CIDR that network subnets are cut from (default {IpamSettings.address_pool})",
    )
    p.add_argument(
        "--liveness-ttl",
        type=int,
        default=None,
        help=f"seconds a dead node keeps its liveness (default {DispatcherSettings.liveness_ttl})",
    )
    p.add_argument(
        "--restart-grace",
        type=int,
        default=None,
        help="seconds a node whose agent stops gracefully keeps its liveness, waiting for the "
        f"agent to come back (default {DispatcherSettings.restart_grace}, "
        f"at most {RESTART_GRACE_MAX}; 0: none)",
    )
    p.add_argument(
        "--reserved-ports",
        default=None,
        help="comma-separated host ports no service may publish (default "
        f"{','.join(map(str, ControlSettings.reserved_ports))}; the --etcd ports and the "
        "managers' own are always added)",
    )
    p.add_argument("--log-level", default=os.environ.get("ORCH_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = ManagerSettings(
        manager_id=args.id,
        listen=args.listen,
        etcd=args.etcd.split(","),
        state_dir=args.state_dir,
        join_listen=args.join_listen,
        advertise_addr=args.advertise_addr,
        join_token=args.join_token,
        join=[a for a in args.join.split(",") if a],
        cert_lifetime=args.cert_lifetime,
    )
    settings.etcd, settings.etcd_tls = _etcd_access(args, p)
    if args.restart_delay is not None:
        settings.orchestrator = dataclasses.replace(
            settings.orchestrator, restart_delay=timedelta(seconds=args.restart_delay)
        )
    if args.liveness_ttl is not None:
        if args.liveness_ttl < 2:
            p.error("--liveness-ttl: at least 2 seconds (etcd's shortest lease)")
        settings.dispatcher = dataclasses.replace(
            settings.dispatcher, liveness_ttl=args.liveness_ttl
        )
    if args.restart_grace is not None:
        if not 0 <= args.restart_grace <= RESTART_GRACE_MAX:
            p.error(f"--restart-grace: 0 to {RESTART_GRACE_MAX} seconds")
        settings.dispatcher = dataclasses.replace(
            settings.dispatcher, restart_grace=args.restart_grace
        )
    settings.control = _with_reserved_ports(settings, args.reserved_ports, p)
    if args.address_pool:
        try:
            ipaddress.IPv4Network(args.address_pool)
        except ValueError as exc:
            p.error(f"--address-pool: {exc}")
        ipam = dataclasses.replace(IpamSettings(), address_pool=args.address_pool)
        settings.control = dataclasses.replace(settings.control, ipam=ipam)
    try:
        asyncio.run(_serve(Manager(settings)))
    except OrchError as exc:
        log.error("%s", exc)
        sys.exit(1)


def _add_etcd_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--etcd", default="127.0.0.1:2379", help="comma-separated endpoints (host:port, TLS)"
    )
    p.add_argument("--etcd-ca-file", help="the etcd CA's certificate (PEM); required")
    p.add_argument("--etcd-cert-file", help="this manager's etcd client certificate; required")
    p.add_argument("--etcd-key-file", help="its key (PEM, mode 0600); required")


def _etcd_access(
    args: argparse.Namespace, p: argparse.ArgumentParser
) -> tuple[list[str], EtcdClientTLS]:
    """The etcd endpoints and TLS material, checked before anything starts: etcd is
    reached over TLS with a client certificate, or not at all."""
    files = (args.etcd_ca_file, args.etcd_cert_file, args.etcd_key_file)
    if not all(files):
        p.error(
            "etcd is reached over TLS only: give --etcd-ca-file, --etcd-cert-file and "
            "--etcd-key-file (deploy/README.md says how to make the etcd PKI)"
        )
    try:
        endpoints = check_endpoints(args.etcd.split(","))
        tls = EtcdClientTLS.load(*(Path(f) for f in files))
    except IdentityError as exc:
        p.error(str(exc))
    return endpoints, tls


def _with_reserved_ports(
    settings: ManagerSettings, text: str | None, p: argparse.ArgumentParser
) -> ControlSettings:
    """The Control API's settings with the reserved host ports: ``text`` (or the
    default) and the client ports of etcd, which a published port would capture."""
    ports = set(settings.control.reserved_ports)
    if text is not None:
        try:
            ports = {int(part) for part in text.split(",") if part.strip()}
        except ValueError:
            p.error(f"--reserved-ports: expected port numbers, got {text!r}")
        if bad := sorted(port for port in ports if not 1 <= port <= 65535):
            p.error(f"--reserved-ports: {bad[0]} is not a port (accepted: 1-65535)")
    for endpoint in settings.etcd:
        port = endpoint.rpartition(":")[2]
        if port.isdigit():
            ports.add(int(port))
    return dataclasses.replace(settings.control, reserved_ports=tuple(sorted(ports)))


def init_main(argv: list[str]) -> None:
    """`orch-manager init`: create the cluster in an empty store."""
    p = argparse.ArgumentParser(
        prog="orch-manager init",
        description="Create a cluster: its CA and join tokens in etcd, this manager's "
        "certificate in --state-dir, admin credentials for the CLI in --admin-tls-dir. "
        "Refused if the store already holds a cluster.",
    )
    _add_etcd_flags(p)
    p.add_argument("--state-dir", type=Path, default=ManagerSettings.state_dir)
    p.add_argument(
        "--admin-tls-dir",
        type=Path,
        required=True,
        help="where to write the CLI's ca.pem, admin.pem, admin-key.pem (0600, dir 0700)",
    )
    p.add_argument(
        "--cert-lifetime",
        type=_lifetime,
        default=NODE_VALIDITY,
        help="node certificate lifetime: seconds, or with a unit s/m/h/d (default 90d; "
        "at least 1m)",
    )
    args = p.parse_args(argv)
    endpoints, etcd_tls = _etcd_access(args, p)
    try:
        cluster = asyncio.run(_init(args, endpoints, etcd_tls))
    except OrchError as exc:
        print(f"orch-manager init: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"cluster {cluster.cluster_id} initialised; admin credentials in {args.admin_tls_dir}")
    print(f"worker token:  {cluster.tokens.worker}")
    print(f"manager token: {cluster.tokens.manager}")


async def _init(
    args: argparse.Namespace, endpoints: list[str], etcd_tls: EtcdClientTLS
) -> ClusterCA:
    store = await EtcdStore.connect(endpoints, tls=etcd_tls)
    try:
        return await init_cluster(
            store,
            state_dir=args.state_dir,
            admin_dir=args.admin_tls_dir,
            cert_lifetime=args.cert_lifetime,
        )
    finally:
        await store.close()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _lifetime(text: str) -> timedelta:
    """--cert-lifetime: a number of seconds, or a number with a unit (90d, 2m)."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: want e.g. 90d, 12h, 2m or 120")
    lifetime = timedelta(seconds=int(number) * _UNITS[unit])
    try:
        return check_cert_lifetime(lifetime)
    except OrchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _serve(manager: Manager) -> None:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main_task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await manager.run()
