"""A tiny fake Control server for the CLI's own tests, and a way to run the real `orch`
executable against it. The fake answers from canned objects and records what it was
asked; the tests exercise the CLI's side of the wire (error translation, failover,
printing). End-to-end runs against a real manager are in the lead's tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tests_support import test_pki

from orch.proto import control_pb2, control_pb2_grpc, objects_pb2, specs_pb2, types_pb2

ORCH = Path(sys.executable).parent / "orch"

NOW = Timestamp(seconds=1_700_000_000)


def ts(seconds_before_now: int = 0) -> Timestamp:
    return Timestamp(seconds=NOW.seconds - seconds_before_now)


def make_node(node_id: str, hostname: str, addr: str) -> objects_pb2.Node:
    return objects_pb2.Node(
        id=node_id,
        meta=objects_pb2.Meta(version=1, created_at=ts(100), updated_at=ts(50)),
        description=objects_pb2.NodeDescription(
            hostname=hostname,
            addr=addr,
            resources=types_pb2.Resources(nano_cpus=2_000_000_000, memory_bytes=4 << 30),
        ),
        spec=objects_pb2.NodeSpec(availability=types_pb2.ACTIVE),
        status=objects_pb2.NodeState(state=types_pb2.NODE_READY),
    )


def make_task(task_id: str, slot: int, node_id: str, ip: str) -> objects_pb2.Task:
    return objects_pb2.Task(
        id=task_id,
        meta=objects_pb2.Meta(version=1, created_at=ts(30), updated_at=ts(10)),
        service_id="svc1",
        service_name="web",
        slot=slot,
        node_id=node_id,
        desired_state=types_pb2.RUNNING,
        container=specs_pb2.ContainerSpec(image="registry:5000/web:1"),
        status=objects_pb2.TaskStatus(
            state=types_pb2.RUNNING, timestamp=ts(10), health=types_pb2.HEALTH_HEALTHY
        ),
        attachments=[objects_pb2.NetworkAttachment(network="front", addresses=[ip])],
    )


class FakeControl(control_pb2_grpc.ControlServicer):
    """Answers from canned objects; ``requests`` records (method, request)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.version = "9.9.9-fake"
        self.nodes = [
            make_node("n1abc", "node1", "10.99.0.1"),
            make_node("n2abc", "node2", "10.99.0.2"),
        ]
        self.tasks = [
            make_task("t1" + "a" * 23, 1, "n1abc", "10.0.1.5/24"),
            make_task("t2" + "b" * 23, 2, "n2abc", "10.0.1.6/24"),
        ]
        spec = specs_pb2.ServiceSpec(
            name="web", replicas=2, container=specs_pb2.ContainerSpec(image="registry:5000/web:1")
        )
        service = objects_pb2.Service(
            id="svc1",
            meta=objects_pb2.Meta(version=3, created_at=ts(100), updated_at=ts(10)),
            spec=spec,
        )
        self.services = {"web": control_pb2.ServiceInfo(service=service, replicas_running=2)}
        self.networks = {
            name: control_pb2.NetworkInfo(
                network=objects_pb2.Network(
                    id=f"id-{name}",
                    meta=objects_pb2.Meta(version=1, created_at=ts(100)),
                    spec=specs_pb2.NetworkSpec(name=name, driver="overlay"),
                    vni=vni,
                    subnet=subnet,
                    gateway=subnet.replace("0/24", "1"),
                ),
                services=services,
                endpoints=len(services) * 2,
            )
            for name, vni, subnet, services in [
                ("front", 4096, "10.10.0.0/24", ["web"]),
                ("spare", 4097, "10.10.1.0/24", []),
            ]
        }

    async def Apply(self, request: Any, context: Any) -> Any:
        self.requests.append(("Apply", request))
        changes = [
            control_pb2.Change(kind="network", name=n.name, action="create")
            for n in request.networks
        ]
        for spec in request.services:
            current = self.services.get(spec.name)
            if current is None:
                changes.append(control_pb2.Change(kind="service", name=spec.name, action="create"))
                continue
            old = current.service.spec
            fields = [
                f.name
                for f in spec.DESCRIPTOR.fields
                if getattr(old, f.name) != getattr(spec, f.name)
            ]
            action = "update" if fields else "unchanged"
            changes.append(
                control_pb2.Change(kind="service", name=spec.name, action=action, fields=fields)
            )
        # A dry run's plan: slot 1 of every service starts on h1, slot 2 finds no node.
        planned = [
            control_pb2.PlannedTask(service=s.name, slot=1, node="h1", action="start")
            for s in request.services
            if request.dry_run
        ]
        planned += [
            control_pb2.PlannedTask(service=s.name, slot=2, action="pending", reason="no node")
            for s in request.services
            if request.dry_run and s.replicas > 1
        ]
        return control_pb2.ApplyResponse(changes=changes, planned_tasks=planned)

    async def ListServices(self, request: Any, context: Any) -> Any:
        self.requests.append(("ListServices", request))
        return control_pb2.ListServicesResponse(services=list(self.services.values()))

    async def GetService(self, request: Any, context: Any) -> Any:
        self.requests.append(("GetService", request))
        if request.name not in self.services:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such service: {request.name}")
        return self.services[request.name]

    async def RemoveService(self, request: Any, context: Any) -> Any:
        self.requests.append(("RemoveService", request))
        if self.services.pop(request.name, None) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such service: {request.name}")
        return control_pb2.RemoveServiceResponse()

    async def Scale(self, request: Any, context: Any) -> Any:
        self.requests.append(("Scale", request))
        too_many = sorted(n for n, r in request.replicas.items() if r > 100)
        if too_many:
            problems = [f"services ({n}): replicas: must be at most 100" for n in too_many]
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "\n".join(problems))
        return control_pb2.ScaleResponse()

    async def ListNetworks(self, request: Any, context: Any) -> Any:
        self.requests.append(("ListNetworks", request))
        return control_pb2.ListNetworksResponse(networks=list(self.networks.values()))

    async def GetNetwork(self, request: Any, context: Any) -> Any:
        self.requests.append(("GetNetwork", request))
        if request.name not in self.networks:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such network: {request.name}")
        return self.networks[request.name]

    async def RemoveNetwork(self, request: Any, context: Any) -> Any:
        self.requests.append(("RemoveNetwork", request))
        info = self.networks.get(request.name)
        if info is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such network: {request.name}")
        if info.services:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"network {request.name} is in use by service {', '.join(info.services)}",
            )
        del self.networks[request.name]
        return control_pb2.RemoveNetworkResponse()

    async def ListTasks(self, request: Any, context: Any) -> Any:
        self.requests.append(("ListTasks", request))
        return control_pb2.ListTasksResponse(tasks=self.tasks)

    async def ListNodes(self, request: Any, context: Any) -> Any:
        self.requests.append(("ListNodes", request))
        return control_pb2.ListNodesResponse(nodes=self.nodes)

    async def GetNode(self, request: Any, context: Any) -> Any:
        self.requests.append(("GetNode", request))
        if request.id == "slow":
            await asyncio.Event().wait()  # never answers: the client's deadline must end it
        for node in self.nodes:
            if request.id in (node.id, node.description.hostname):
                return node
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no such node: {request.id}")

    async def Version(self, request: Any, context: Any) -> Any:
        self.requests.append(("Version", request))
        return control_pb2.VersionResponse(version=self.version)

    async def Logs(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.requests.append(("Logs", request))
        for task, stream, line in [
            (self.tasks[0], "stdout", b"hello from 1"),
            (self.tasks[1], "stderr", b"warning from 2"),
            (self.tasks[1], "stdout", b"bytes \xff\xfe"),
        ]:
            yield control_pb2.LogEntry(
                task_id=task.id,
                service=task.service_name,
                slot=task.slot,
                node_id=task.node_id,
                timestamp=ts(),
                stream=stream,
                line=line,
            )
        if request.follow:
            await asyncio.Event().wait()  # a quiet service: nothing more until cancelled


@dataclass
class FakeServer:
    control: FakeControl
    address: str


@contextlib.asynccontextmanager
async def serve_fake() -> AsyncIterator[FakeServer]:
    server = grpc.aio.server()
    control = FakeControl()
    control_pb2_grpc.add_ControlServicer_to_server(control, server)
    port = test_pki().serve(server)
    await server.start()
    try:
        yield FakeServer(control, f"127.0.0.1:{port}")
    finally:
        await server.stop(0)


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    async with serve_fake() as server:
        yield server


@pytest.fixture
async def other_fake_server() -> AsyncIterator[FakeServer]:
    """A second, separate fake cluster (e.g. for switching contexts)."""
    async with serve_fake() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real ~/.config/orch: the config file's default place
    follows $HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ORCH_CONFIG", raising=False)


@pytest.fixture
def dead_address() -> str:
    """A loopback address where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode()


def _cli_env(tmp_path: Path) -> dict[str, str]:
    """No manager comes from the environment, a state dir or the user's config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_STATE_DIR"] = str(tmp_path / "state")
    if not (tmp_path / "state" / "tls").exists():  # where the CLI looks by default
        test_pki().write_admin(tmp_path / "state" / "tls")
    env["ORCH_CONFIG"] = str(tmp_path / "config" / "orch" / "config.yaml")
    return env


@pytest.fixture
def orch(tmp_path: Path) -> Any:
    """Runs the installed `orch` executable as a subprocess to its end (the event loop
    keeps serving the fake server meanwhile)."""
    env = _cli_env(tmp_path)

    async def run(*args: str, extra_env: dict[str, str] | None = None) -> Result:
        proc = await asyncio.create_subprocess_exec(
            str(ORCH),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, **(extra_env or {})},
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return Result(proc.returncode, stdout, stderr.decode())

    return run


@pytest.fixture
async def orch_process(tmp_path: Path) -> AsyncIterator[Any]:
    """Starts `orch` as a subprocess that keeps running (logs -f, ps --watch) with piped
    stdout and stderr; any still running at the end of the test is killed."""
    env = _cli_env(tmp_path)
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            str(ORCH),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
