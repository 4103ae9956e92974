"""Helpers shared by the overlay tests (imported by name: pytest puts this dir on sys.path)."""

from __future__ import annotations

import os
import shutil

import pytest

from orch.overlay import netns as ns

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
