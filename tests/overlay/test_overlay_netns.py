"""Named netns made natively (unshare + bind mount), checked with iproute2 and findmnt.

What ``ip netns add/delete`` did for us before must still hold: the name is a mount of a
fresh netns that ``ip netns`` lists and enters, lo is up in it, ``/run/netns`` is a shared
mount, and a delete leaves neither mount nor file.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from overlay_helpers import cleanup_prefix, needs_netns

from orch.errors import NetworkError
from orch.overlay import netns as ns

pytestmark = [pytest.mark.integration, needs_netns]


@pytest.fixture(autouse=True)
async def _cleanup(run_prefix: str) -> AsyncIterator[None]:
    """Every netns named with the run prefix goes, also when a test fails."""
    try:
        yield
    finally:
        await cleanup_prefix(run_prefix)


def present(path: str) -> bool:
    return os.path.lexists(path)


def touch(path: str) -> None:
    with open(path, "w"):
        pass


async def test_create_makes_a_fresh_netns_that_iproute2_sees(run_prefix: str) -> None:
    name = f"{run_prefix}-fresh"
    path = await ns.create_netns(name)
    assert ns.netns_exists(name)  # a mount point
    assert os.stat(path).st_ino != os.stat("/proc/thread-self/ns/net").st_ino
    rc, out, _ = await ns.run_ip(["netns", "list"])
    assert rc == 0 and name in out.split()
    rc, out, _ = await ns.exec_in_netns(name, ["ip", "-o", "-4", "addr"])
    assert rc == 0 and "lo    inet 127.0.0.1/8" in out  # lo is up: it has its address
    rc, out, _ = await ns.exec_in_netns(name, ["ip", "-o", "link"])
    assert rc == 0 and len(out.splitlines()) == 1  # nothing but lo
    proc = await asyncio.create_subprocess_exec(
        "findmnt", "-n", "-o", "PROPAGATION", str(ns.NETNS_DIR), stdout=asyncio.subprocess.PIPE
    )
    out_b, _ = await proc.communicate()
    assert out_b.decode().split()[0] == "shared"
    assert await ns.delete_netns(name) is True
    assert not present(path)
    rc, out, _ = await ns.run_ip(["netns", "list"])
    assert name not in out.split()
    assert await ns.delete_netns(name) is False


async def test_create_is_idempotent_and_keeps_the_netns(run_prefix: str) -> None:
    name = f"{run_prefix}-twice"
    path = await ns.create_netns(name)
    inode = os.stat(path).st_ino
    assert await ns.create_netns(name) == path
    assert os.stat(path).st_ino == inode


async def test_leftover_unmounted_file_is_replaced_and_deletable(run_prefix: str) -> None:
    """A crash between creating the name and mounting the netns leaves a plain file."""
    stale = ns.netns_path(f"{run_prefix}-stale")
    touch(stale)
    assert not ns.netns_exists(f"{run_prefix}-stale")
    await ns.create_netns(f"{run_prefix}-stale")
    assert ns.netns_exists(f"{run_prefix}-stale")
    other = ns.netns_path(f"{run_prefix}-plain")
    touch(other)
    assert await ns.delete_netns(f"{run_prefix}-plain") is True
    assert not present(other)


async def test_concurrent_creates_each_get_their_own_netns(run_prefix: str) -> None:
    names = [f"{run_prefix}-c{i}" for i in range(12)]
    paths = await asyncio.gather(*(ns.create_netns(n) for n in names))
    assert len({os.stat(p).st_ino for p in paths}) == 12
    await asyncio.gather(*(ns.delete_netns(n) for n in names))
    assert ns.list_netns(f"{run_prefix}-c") == []


async def test_bad_names_are_refused(run_prefix: str) -> None:
    for bad in ("", "a/b", ".."):
        with pytest.raises(NetworkError, match="bad netns name"):
            await ns.create_netns(bad)
