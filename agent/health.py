"""Health checks of running tasks: the probes, the state machine, the per-task prober.

A task whose spec has a ``HealthCheck`` gets a ``Prober`` from its task runner while it is
RUNNING. The prober waits ``interval`` after each probe ends (the first probe comes one
interval after the start, as in Docker), runs the probe under ``timeout`` and feeds the
result to a ``HealthMachine``; every change of health goes to the runner at once, which
reports it over the session. When the machine says UNHEALTHY the prober returns why, and
the runner stops the container and reports the task FAILED: the manager's restart policy
takes it from there (Swarm's semantics; Docker alone only marks the container).

The machine is Docker's (daemon/health.go): STARTING until the first success, then
HEALTHY; ``retries`` consecutive failures make it UNHEALTHY. Failures while still STARTING
inside ``start_period`` (measured from the container's start) do not count; a success
inside it ends it. It is pure (results and times in, state out), so it is tested without
a clock.

The probes:

- ``exec``: the command runs in the container through the runtime's exec primitive (its
  namespaces, cgroup, user and env); exit 0 is healthy. At the timeout it is killed
  (its process group and runc), so a hanging probe never piles up.
- ``http``: a GET of the task's address from the node; 2xx/3xx is healthy. ``tcp``: a
  connect. The address is the first address of the task's first network. Bridge and
  overlay addresses are reachable from the agent's netns: each node's bridge of such a
  network carries the network's gateway address (overlay/bridge.py, overlay/vxlan.py),
  so the host has a connected route to every local endpoint. A host-network task is
  probed at 127.0.0.1 in the agent's netns. A task without an address (network ``none``)
  is probed at 127.0.0.1 inside its own netns: the socket is made on a thread that
  entered that netns (a socket keeps the netns it was made in) and then used from the
  event loop like any other.

Cancelling a prober (the task stops) cancels the probe in flight; every probe closes its
socket or kills its exec process on the way out, so nothing outlives the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from orch import model
from orch.errors import ContainerError
from orch.overlay.netns import run_in_netns
from orch.overlay.records import EndpointInfo
from orch.proto import specs_pb2, types_pb2
from orch.runtime.containers import ContainerRuntime
from orch.runtime.exec import ExecProcess

log = logging.getLogger(__name__)

STARTING = types_pb2.HEALTH_STARTING
HEALTHY = types_pb2.HEALTH_HEALTHY
UNHEALTHY = types_pb2.HEALTH_UNHEALTHY


@dataclass(frozen=True)
class HealthSettings:
    """Defaults of health checks (Docker's) and limits of the probes."""

    interval: float = 30.0
    """Seconds from the end of one probe to the start of the next, when the check sets none."""
    timeout: float = 30.0
    """Seconds a probe may take before it counts as failed, when the check sets none."""
    retries: int = 3
    """Consecutive failures that make a task unhealthy, when the check sets none."""
    output_limit: int = 4096
    """Bytes of an exec probe's output kept for the failure message (Docker's limit)."""
    detail_limit: int = 200
    """Characters of a probe's last result kept in the task's error."""


@dataclass(frozen=True)
class CheckConfig:
    """A HealthCheck with the defaults applied, in seconds."""

    kind: str
    """ "exec", "http" or "tcp"."""
    interval: float
    timeout: float
    retries: int
    start_period: float
    command: tuple[str, ...] = ()
    port: int = 0
    path: str = "/"
    scheme: str = "http"


def check_config(check: specs_pb2.HealthCheck, settings: HealthSettings) -> CheckConfig | None:
    """The check of a task's spec; None when it has none (or names no probe)."""
    kind = check.WhichOneof("probe")
    if kind is None:
        return None

    def seconds(name: str, default: float) -> float:
        return getattr(check, name).ToNanoseconds() / 1e9 if check.HasField(name) else default

    return CheckConfig(
        kind=kind,
        interval=seconds("interval", settings.interval),
        timeout=seconds("timeout", settings.timeout),
        retries=check.retries or settings.retries,
        start_period=seconds("start_period", 0.0),
        command=tuple(check.exec.command),
        port=check.http.port if kind == "http" else check.tcp.port,
        path=check.http.path or "/",
        scheme=check.http.scheme or "http",
    )


# -- the state machine (pure) ----------------------------------------------------------------


@dataclass
class HealthMachine:
    """Docker's health state machine over probe results; see the module docstring."""

    retries: int
    start_period: float
    started_at: float
    """When the container started, on the same clock as the probe times."""
    state: int = STARTING
    failures: int = 0
    """Consecutive failures that counted."""

    def observe(self, ok: bool, at: float) -> int | None:
        """One probe result; ``at`` is when the probe began. The new state when it changed."""
        before = self.state
        if ok:
            self.failures = 0
            self.state = HEALTHY
        elif not (self.state == STARTING and at - self.started_at < self.start_period):
            self.failures += 1
            if self.failures >= self.retries:
                self.state = UNHEALTHY
        return self.state if self.state != before else None


# -- probes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    """What happened, for people: "GET http://10.0.3.5:80/health -> 500", "exit 1: ..."."""


@dataclass(frozen=True)
class ProbeTarget:
    """Where http and tcp probes connect: ``host``, from the netns named ``netns`` (None:
    the agent's own)."""

    host: str
    netns: str | None = None


def probe_target(endpoint: EndpointInfo) -> ProbeTarget:
    """Pure: where to probe a container with network ``endpoint`` (see module docstring)."""
    if not endpoint.networks or endpoint.networks[0] == model.HOST:
        return ProbeTarget("127.0.0.1")
    first = endpoint.networks[0]
    for attachment in endpoint.attachments:
        if attachment.network == first and attachment.address:
            return ProbeTarget(attachment.address.split("/")[0])
    netns = Path(endpoint.netns_path).name if endpoint.netns_path else None
    return ProbeTarget("127.0.0.1", netns)


async def probe_container(
    runtime: ContainerRuntime,
    endpoint: EndpointInfo | None,
    container_id: str,
    check: CheckConfig,
    settings: HealthSettings | None = None,
) -> ProbeResult:
    """One probe of ``check`` against a running container with network ``endpoint``."""
    if check.kind == "exec":
        return await exec_probe(
            lambda argv: runtime.exec(container_id, argv), check, settings or HealthSettings()
        )
    if endpoint is None:  # not set up (yet, or any more): nothing to connect to
        return ProbeResult(False, f"{check.kind} probe: the task has no network endpoint")
    if check.kind == "http":
        return await http_probe(probe_target(endpoint), check)
    return await tcp_probe(probe_target(endpoint), check)


Exec = Callable[[list[str]], Awaitable[ExecProcess]]


async def exec_probe(run: Exec, check: CheckConfig, settings: HealthSettings) -> ProbeResult:
    """Run the check's command in the container; exit 0 is healthy."""
    try:
        proc = await run(list(check.command))
    except ContainerError as exc:
        return ProbeResult(False, str(exc))
    try:
        async with asyncio.timeout(check.timeout):
            out, err, code = await asyncio.gather(
                _read_capped(proc.stdout, settings.output_limit),
                _read_capped(proc.stderr, settings.output_limit),
                proc.wait(),
            )
    except TimeoutError:
        return ProbeResult(False, f"timed out after {check.timeout:g}s")
    except ContainerError as exc:
        return ProbeResult(False, str(exc))
    finally:
        proc.kill()  # a no-op once it ended; else its process group and runc
        with contextlib.suppress(ContainerError):
            await asyncio.shield(proc.wait())
    output = (out + err).decode(errors="replace").strip()
    if code == 0:
        return ProbeResult(True, "exit 0")
    first_line = output.splitlines()[0] if output else ""
    return ProbeResult(False, f"exit {code}" + (f": {first_line}" if first_line else ""))


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything up to EOF, keeping the first ``limit`` bytes (the rest is drained)."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk[: max(0, limit - len(kept))]
    return bytes(kept)


async def http_probe(target: ProbeTarget, check: CheckConfig) -> ProbeResult:
    """GET scheme://host:port/path; a 2xx or 3xx status is healthy."""
    url = f"{check.scheme}://{_hostport(target.host, check.port)}{check.path}"
    what = f"GET {url}"
    tls = _tls_context() if check.scheme == "https" else None
    try:
        async with asyncio.timeout(check.timeout):
            async with _connection(target, check.port, tls) as (reader, writer):
                writer.write(
                    f"GET {check.path} HTTP/1.1\r\nHost: {_hostport(target.host, check.port)}\r\n"
                    "User-Agent: orch-health/1\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                line = await reader.readline()
    except TimeoutError:
        return ProbeResult(False, f"{what}: timed out after {check.timeout:g}s")
    except (OSError, ssl.SSLError, ValueError) as exc:
        return ProbeResult(False, f"{what}: {_os_error(exc)}")
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        shown = line[:40].decode("latin-1").strip() or "nothing"
        return ProbeResult(False, f"{what}: not an HTTP answer ({shown!r})")
    status = int(parts[1])
    return ProbeResult(200 <= status < 400, f"{what} -> {status}")


async def tcp_probe(target: ProbeTarget, check: CheckConfig) -> ProbeResult:
    """Connect to host:port; an accepted connection is healthy."""
    what = f"connect {_hostport(target.host, check.port)}"
    try:
        async with asyncio.timeout(check.timeout):
            async with _connection(target, check.port, None):
                pass
    except TimeoutError:
        return ProbeResult(False, f"{what}: timed out after {check.timeout:g}s")
    except OSError as exc:
        return ProbeResult(False, f"{what}: {_os_error(exc)}")
    return ProbeResult(True, f"{what}: connected")


@contextlib.asynccontextmanager
async def _connection(target: ProbeTarget, port: int, tls: ssl.SSLContext | None):
    """A connected (reader, writer) pair, closed (and its socket with it) on the way out."""
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    if target.netns is None:
        sock = socket.socket(family, socket.SOCK_STREAM)
    else:
        sock = await run_in_netns(target.netns, lambda: socket.socket(family, socket.SOCK_STREAM))
    writer = None
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (target.host, port))
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=tls, server_hostname=target.host if tls else None
        )
        yield reader, writer
    finally:
        if writer is not None and tls is not None:
            writer.transport.abort()  # no TLS goodbye to wait for (up to 30 s)
        elif writer is not None:
            writer.close()  # closes the socket on the next loop turn
        else:
            sock.close()


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # as Kubernetes' https probes: reachability, not trust
    return context


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


# -- the prober ------------------------------------------------------------------------------

Probe = Callable[[], Awaitable[ProbeResult]]
OnChange = Callable[[int, ProbeResult], None]


@dataclass
class Prober:
    """Runs one task's check until the task turns unhealthy (``run`` returns the error to
    report) or the prober is cancelled. ``probe`` runs one probe; ``on_change`` hears
    every change of health at once."""

    check: CheckConfig
    probe: Probe
    on_change: OnChange
    started_at: float
    """When the container started, on ``clock``."""
    initial: int = STARTING
    """The health to start from: an adopted task that was HEALTHY stays so."""
    clock: Callable[[], float] = time.monotonic
    detail_limit: int = 200
    machine: HealthMachine = field(init=False)

    def __post_init__(self) -> None:
        self.machine = HealthMachine(
            self.check.retries, self.check.start_period, self.started_at, self.initial
        )

    async def run(self) -> str:
        while True:
            await asyncio.sleep(self.check.interval)
            began = self.clock()
            result = await self._probe_once()
            log.debug("%s probe: %s", self.check.kind, result.detail)
            changed = self.machine.observe(result.ok, began)
            if changed is not None:
                self.on_change(changed, result)
            if self.machine.state == UNHEALTHY:
                return unhealthy_error(self.check, result, self.detail_limit)

    async def _probe_once(self) -> ProbeResult:
        # The probes keep their own timeout; this one is a backstop against a probe that
        # ignores it, with a little room so the probe's own message wins.
        try:
            async with asyncio.timeout(self.check.timeout + 1.0):
                return await self.probe()
        except TimeoutError:
            return ProbeResult(False, f"timed out after {self.check.timeout:g}s")


def unhealthy_error(check: CheckConfig, last: ProbeResult, limit: int = 200) -> str:
    """ "unhealthy: 3 consecutive http probe failures (last: GET ... -> 500)"."""
    detail = last.detail if len(last.detail) <= limit else last.detail[: limit - 1] + "…"
    consecutive = "consecutive " if check.retries > 1 else ""
    plural = "s" if check.retries > 1 else ""
    return (
        f"unhealthy: {check.retries} {consecutive}{check.kind} probe failure{plural} "
        f"(last: {detail})"
    )
