"""Helpers shared by the overlay tests (imported by name: pytest puts this dir on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orch.overlay import netns as ns
from orch.overlay.endpoints import EndpointManager
from orch.overlay.links import KernelNet
from orch.overlay.settings import NetworkSettings
from orch.overlay.vxlan import OverlayDriver, OverlayNetwork

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)
"""Skip marker for tests that make real namespaces and links."""


async def cleanup_prefix(prefix: str) -> None:
    """Delete every netns named with ``prefix`` (endpoints and the host netns)."""
    for name in ns.list_netns(prefix):
        await ns.delete_netns(name)


async def ping(netns_name: str, address: str) -> bool:
    """One ICMP echo from inside ``netns_name`` (busybox ping: always installed here)."""
    argv = ["ping", "-c1", "-W1", address]
    if shutil.which("ping") is None:
        argv = ["busybox", *argv]
    rc, _, _ = await ns.exec_in_netns(netns_name, argv)
    return rc == 0


async def run_ok(*argv: str) -> str:
    """Run a command (iproute2, nft: not our code) and return its stdout; fail the test
    with its stderr if it fails."""
    rc, out, err = await ns.run_command(list(argv))
    assert rc == 0, f"{' '.join(argv)}: {err.strip()}"
    return out


async def fdb_of(host: str, dev: str) -> dict[str, str]:
    """``bridge fdb show dev`` in netns ``host``: MAC -> remote, static "self" entries only."""
    out = await run_ok("bridge", "-n", host, "fdb", "show", "dev", dev)
    entries = {}
    for line in out.splitlines():
        words = line.split()
        if "dst" in words and "self" in words:
            entries[words[0]] = words[words.index("dst") + 1]
    return entries


async def neigh_of(host: str, dev: str) -> dict[str, str]:
    """``ip neigh show dev`` in netns ``host``: IP -> MAC of PERMANENT entries."""
    out = await run_ok("ip", "-n", host, "neigh", "show", "dev", dev)
    return {w[0]: w[2] for w in (line.split() for line in out.splitlines()) if "PERMANENT" in w}


async def link_names(host: str) -> set[str]:
    out = await run_ok("ip", "-n", host, "-o", "link", "show")
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


@dataclass(eq=False)
class Host:
    """One "host" of the test underlay: its netns, underlay address and endpoint manager
    (working in that netns through ``host_netns``, as an agent inside it would)."""

    netns: str
    address: str
    settings: NetworkSettings
    manager: EndpointManager

    def join(self, network: OverlayNetwork) -> OverlayDriver:
        """Register an overlay driver for ``network`` (what agent/networks.py does)."""
        driver = OverlayDriver(self.settings, KernelNet(self.netns), network)
        self.manager.register_driver(driver)
        return driver


FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())"


async def fetch(netns: str, url: str) -> str | None:
    """The body at ``url`` fetched from inside ``netns``; None if it cannot be fetched."""
    rc, out, _ = await ns.run_command([sys.executable, "-I", "-c", FETCH, url], netns=netns)
    return out.strip() if rc == 0 else None


@contextlib.asynccontextmanager
async def http_server(
    netns: str, folder: Path, port: int = 80, bind: str = "0.0.0.0"
) -> AsyncIterator[asyncio.subprocess.Process]:
    """python -m http.server in ``netns``, serving ``folder``; yields the process (its
    stderr carries the access log). Killed afterwards, also on failure."""
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={ns.netns_path(netns)}", sys.executable, "-I", "-m", "http.server",
        str(port), "--bind", bind, "--directory", str(folder),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    probe = "127.0.0.1" if bind == "0.0.0.0" else bind
    try:
        async with asyncio.timeout(10):
            # Polling with a deadline: no event says "the server is listening".
            while await fetch(netns, f"http://{probe}:{port}/hello.txt") is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
