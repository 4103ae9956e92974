"""The probes on the real thing: exec probes through `runc exec` into a busybox container,
http and tcp probes against servers in this netns and inside a fresh netns (the path a
task on network "none" is probed by).

Everything made here carries a per-test "orcht..." prefix and is removed afterwards, also
on failure: containers, mounts and cgroups (the runtime's sweep), the netns, the servers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from tests_support import eventually

from orch.agent.health import (
    CheckConfig,
    HealthSettings,
    ProbeResult,
    ProbeTarget,
    exec_probe,
    http_probe,
    tcp_probe,
)
from orch.overlay import netns as ns
from orch.runtime import cgroups
from orch.runtime.containers import ContainerRuntime
from orch.runtime.images import ImageStore
from orch.runtime.model import ContainerConfig
from orch.runtime.rootfs import mounts_under
from orch.runtime.settings import ImageSettings, RuntimeSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def needs(*binaries: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    missing = [b for b in binaries if not shutil.which(b)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")


@pytest.fixture
def prefix() -> str:
    return "orcht" + secrets.token_hex(3)


@pytest.fixture(scope="module")
def busybox_ref(tmp_path_factory: pytest.TempPathFactory) -> str:
    needs("umoci", "skopeo")
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed")
    out = tmp_path_factory.mktemp("images")
    subprocess.run(["sh", str(ROOT / "deploy/build-images.sh"), str(out)], check=True)
    return f"oci:{out}/busybox:latest"


@pytest.fixture
async def container(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, prefix: str, busybox_ref: str
) -> AsyncIterator[tuple[ContainerRuntime, str]]:
    """A running busybox container (its own runtime roots); removed with every mount and
    cgroup afterwards, and checked to be gone."""
    needs("runc", "skopeo")
    rt = ContainerRuntime(
        RuntimeSettings(
            state_dir=tmp_path / "state", runc_root=tmp_path / "runc", cgroup_parent=f"{prefix}-cg"
        )
    )
    cid = f"{prefix}-c"
    try:
        layouts = (str(tmp_path_factory.getbasetemp()),)
        store = ImageStore(tmp_path / "images", ImageSettings(oci_layout_dirs=layouts))
        image = await store.pull(busybox_ref)
        command = ["sh", "-c", "trap 'exit 0' TERM; touch /tmp/ok; while :; do sleep 1; done"]
        await rt.create(ContainerConfig(id=cid, image=busybox_ref, command=command), image)
        await rt.start(cid)
        yield rt, cid
    finally:
        await rt.sweep(everything=True)
        await rt.close()
        left = [*mounts_under(tmp_path / "state"), *cgroups.cgroup_dirs(f"/{prefix}-cg")]
        assert not left, f"left behind: {left}"


def exec_check(*command: str, timeout: float = 5.0) -> CheckConfig:
    return CheckConfig("exec", 1.0, timeout, 3, 0.0, command=command)


def sleepers(rt: ContainerRuntime, cid: str) -> list[int]:
    """Pids of processes in the container's cgroup running "sleep 3600"."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            in_it = rt.cgroups_path(cid) in Path(f"/proc/{pid}/cgroup").read_text()
            if in_it and Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x003600\x00":
                found.append(int(pid))
        except OSError:
            continue
    return found


async def test_exec_probe_results(container: tuple[ContainerRuntime, str]) -> None:
    rt, cid = container
    settings = HealthSettings()

    async def probe(*command: str, timeout: float = 5.0) -> ProbeResult:
        return await exec_probe(
            lambda argv: rt.exec(cid, argv), exec_check(*command, timeout=timeout), settings
        )

    assert await probe("test", "-f", "/tmp/ok") == ProbeResult(True, "exit 0")
    failed = await probe("sh", "-c", "echo 'no /tmp/ready' >&2; exit 1")
    assert failed == ProbeResult(False, "exit 1: no /tmp/ready")
    assert await probe("no-such-probe") == ProbeResult(
        False,
        'exit 127: exec failed: unable to start container process: exec: "no-such-probe": '
        "executable file not found in $PATH",
    )
    # Lots of output is drained (the probe must not block on a full pipe) and cut.
    big = await probe("sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; exit 2")
    assert big.detail == "exit 2: " + "x" * settings.output_limit


async def test_exec_probe_timeout_kills_the_command(
    container: tuple[ContainerRuntime, str],
) -> None:
    rt, cid = container
    check = exec_check("sh", "-c", "trap '' TERM; sleep 3600 & sleep 3600", timeout=0.5)
    began = time.monotonic()
    result = await exec_probe(lambda argv: rt.exec(cid, argv), check, HealthSettings())
    assert result == ProbeResult(False, "timed out after 0.5s")
    assert time.monotonic() - began < 3
    assert sleepers(rt, cid) == []  # the command and its background child are gone


async def test_exec_probe_cancelled_midway_leaves_nothing(
    container: tuple[ContainerRuntime, str],
) -> None:
    """A task that stops cancels its probe in flight: the probe's command must go too."""
    rt, cid = container
    started = asyncio.Event()

    async def run(argv: list[str]):
        proc = await rt.exec(cid, argv)
        started.set()
        return proc

    job = asyncio.create_task(exec_probe(run, exec_check("sleep", "3600"), HealthSettings()))
    async with asyncio.timeout(10):
        await started.wait()
    await eventually(lambda: sleepers(rt, cid) or None, 10, "runc to start the probe", 0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert sleepers(rt, cid) == []


async def test_exec_probe_of_a_stopped_container(container: tuple[ContainerRuntime, str]) -> None:
    rt, cid = container
    await rt.stop(cid, grace=5)
    result = await exec_probe(lambda argv: rt.exec(cid, argv), exec_check("true"), HealthSettings())
    assert result == ProbeResult(False, f"container {cid} is not running (state: stopped)")


# -- http and tcp ------------------------------------------------------------------------------


def http_check(port: int, path: str = "/", timeout: float = 5.0, scheme: str = "http"):
    return CheckConfig("http", 1.0, timeout, 3, 0.0, port=port, path=path, scheme=scheme)


def tcp_check(port: int, timeout: float = 5.0) -> CheckConfig:
    return CheckConfig("tcp", 1.0, timeout, 3, 0.0, port=port)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)


def port_of(server: asyncio.Server) -> int:
    return server.sockets[0].getsockname()[1]


def answering(status_line: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:")
        writer.write(status_line + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    return handle


@pytest.mark.parametrize(
    ("status", "ok"),
    [(b"HTTP/1.1 200 OK", True), (b"HTTP/1.0 302 Found", True), (b"HTTP/1.1 404 Not Found", False),
     (b"HTTP/1.1 500 Oops", False)],
)  # fmt: skip
async def test_http_status_decides(status: bytes, ok: bool) -> None:
    server = await serve(answering(status))
    async with server:
        port = port_of(server)
        result = await http_probe(ProbeTarget("127.0.0.1"), http_check(port, "/health"))
    code = status.split()[1].decode()
    assert result == ProbeResult(ok, f"GET http://127.0.0.1:{port}/health -> {code}")


async def test_http_failures_say_what_happened() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        await writer.drain()
        writer.close()

    hung: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)  # never answers

    async with await serve(garbage) as server:
        port = port_of(server)
        result = await http_probe(ProbeTarget("127.0.0.1"), http_check(port))
        assert result == ProbeResult(
            False, f"GET http://127.0.0.1:{port}/: not an HTTP answer ('SSH-2.0-OpenSSH')"
        )
    async with await serve(hang) as server:
        port = port_of(server)
        began = time.monotonic()
        result = await http_probe(ProbeTarget("127.0.0.1"), http_check(port, timeout=0.3))
        assert result == ProbeResult(False, f"GET http://127.0.0.1:{port}/: timed out after 0.3s")
        assert time.monotonic() - began < 2
        for writer in hung:
            writer.close()
    closed = free_port()
    assert await http_probe(ProbeTarget("127.0.0.1"), http_check(closed)) == ProbeResult(
        False, f"GET http://127.0.0.1:{closed}/: connection refused"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_tcp_probe() -> None:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with await serve(accept) as server:
        port = port_of(server)
        assert await tcp_probe(ProbeTarget("127.0.0.1"), tcp_check(port)) == ProbeResult(
            True, f"connect 127.0.0.1:{port}: connected"
        )
    closed = free_port()
    assert await tcp_probe(ProbeTarget("127.0.0.1"), tcp_check(closed)) == ProbeResult(
        False, f"connect 127.0.0.1:{closed}: connection refused"
    )


@pytest.fixture
def tls_context(tmp_path: Path) -> ssl.SSLContext:
    """A server context with a throwaway self-signed certificate (openssl)."""
    needs("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=orch-test",
         "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def test_https_probe_does_not_verify_the_certificate(tls_context: ssl.SSLContext) -> None:
    async with await serve(answering(b"HTTP/1.1 204 No Content"), tls_context) as server:
        port = port_of(server)
        check = http_check(port, "/health", scheme="https")
        result = await http_probe(ProbeTarget("127.0.0.1"), check)
    assert result == ProbeResult(True, f"GET https://127.0.0.1:{port}/health -> 204")


@pytest.fixture
async def netns_server(tmp_path: Path, prefix: str) -> AsyncIterator[tuple[str, int]]:
    """busybox httpd on 127.0.0.1 inside a fresh netns (lo only), serving /ok."""
    needs("nsenter", "ip", "busybox")
    www = tmp_path / "www"
    www.mkdir()
    (www / "ok").write_text("fine\n")
    name = f"{prefix}-p"
    await ns.create_netns(name)
    port = 8080
    proc = subprocess.Popen(  # noqa: ASYNC220 (a server for the test's whole length)
        ["nsenter", f"--net={ns.netns_path(name)}", "/bin/busybox", "httpd", "-f",
         "-p", f"127.0.0.1:{port}", "-h", str(www)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield name, port
    finally:
        proc.kill()
        proc.wait(10)
        await ns.delete_netns(name)


async def test_http_and_tcp_inside_a_container_netns(netns_server: tuple[str, int]) -> None:
    """Network "none": the socket is made inside the netns, where 127.0.0.1 is the task's
    own loopback (from this netns nothing listens on that port)."""
    name, port = netns_server
    inside = ProbeTarget("127.0.0.1", name)

    async def listening() -> bool:
        return (await tcp_probe(inside, tcp_check(port))).ok

    await eventually(listening, 20, "httpd to listen")
    assert await http_probe(inside, http_check(port, "/ok")) == ProbeResult(
        True, f"GET http://127.0.0.1:{port}/ok -> 200"
    )
    assert await http_probe(inside, http_check(port, "/missing")) == ProbeResult(
        False, f"GET http://127.0.0.1:{port}/missing -> 404"
    )
    outside = await tcp_probe(ProbeTarget("127.0.0.1"), tcp_check(port))
    assert not outside.ok
