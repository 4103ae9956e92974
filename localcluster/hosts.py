"""The "hosts" of a local cluster: one network namespace per node on an underlay bridge.

A real cluster is machines on a LAN; here each machine is a named netns
``<prefix>-h<n>`` whose ``eth0`` (one end of a veth; the other end, ``<prefix>-v<n>``, is
a port of the run's bridge ``<prefix>-ul`` in the root netns) carries
``10.212.<k>.<10+n>/24``. The bridge holds the gateway address ``10.212.<k>.1``, where
etcd, the registry and the managers listen, so the CLI in the root netns and the agents
in their hosts reach them alike. Hosts get lo up and NO default route, and nothing
forwards or NATs their traffic: it stays on this machine.

``k`` is chosen per run (no address of the root netns may already lie in
``10.212.<k>.0/24``) and the prefix must not name any netns or link that exists, so two
clusters coexist. The choice and the bridge's creation happen under an flock, so two
runs starting together cannot pick the same subnet or prefix.

Not a hot path (once per `orch dev up`), so links are made with ``ip`` for readability;
the netns themselves with orch.overlay.netns (native, as the agents make theirs).
Processes run inside a host with ``nsenter --net`` (not ``ip netns exec``, which gives
them a private mount namespace where netns they create are invisible to everyone else).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

from orch.errors import NetworkError
from orch.overlay.netns import (
    NETNS_DIR,
    create_netns,
    delete_netns,
    netns_exists,
    run_command,
    run_ip,
)

log = logging.getLogger(__name__)

UNDERLAY_SPACE = ipaddress.IPv4Network("10.212.0.0/16")
"""Where underlay subnets come from: one /24 per run."""
HOST_OFFSET = 10
"""Host n gets the address .<HOST_OFFSET + n> of the underlay subnet."""
MAX_HOSTS = 254 - HOST_OFFSET
LOCK_PATH = Path("/run/orch/localcluster.lock")
"""Serialises choosing a subnet and prefix and creating the bridge across runs."""


def bridge_name(prefix: str) -> str:
    return f"{prefix}-ul"


def host_netns(prefix: str, n: int) -> str:
    return f"{prefix}-h{n}"


def host_veth(prefix: str, n: int) -> str:
    """The root-netns end of host n's veth (the other end is eth0 in the host)."""
    return f"{prefix}-v{n}"


def underlay_subnet(k: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.212.{k}.0/24")


def gateway_address(subnet: str) -> str:
    return str(next(ipaddress.IPv4Network(subnet).hosts()))


def host_address(subnet: str, n: int) -> str:
    if not 1 <= n <= MAX_HOSTS:
        raise NetworkError(f"host {n}: want 1-{MAX_HOSTS}")
    return str(ipaddress.IPv4Network(subnet).network_address + HOST_OFFSET + n)


def pick_subnet_index(used: Iterable[str], seed: int) -> int:
    """The first k from ``seed`` on (wrapping) whose 10.212.k.0/24 holds none of the
    ``used`` addresses. Raises NetworkError when all 256 are taken."""
    taken = set()
    for text in used:
        addr = ipaddress.IPv4Address(text.split("/")[0])
        if addr in UNDERLAY_SPACE:
            taken.add(addr.packed[2])
    for step in range(256):
        k = (seed + step) % 256
        if k not in taken:
            return k
    raise NetworkError(f"every /24 of {UNDERLAY_SPACE} is in use by another local cluster")


def prefix_in_use(prefix: str, links: Iterable[str], netns: Iterable[str]) -> bool:
    """True if any link of the root netns or any named netns starts with ``prefix``:
    agents' netns are ``<prefix><n>-...``, hosts ``<prefix>-h<n>``, links ``<prefix>-...``."""
    return any(name.startswith(prefix) for name in (*links, *netns))


def nsenter_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the named netns, sharing every other namespace with us."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", *argv]


async def _ip(*argv: str) -> str:
    rc, out, err = await run_ip(argv)
    if rc != 0:
        raise NetworkError(f"ip {' '.join(argv)}: {err.strip() or f'exit {rc}'}")
    return out


async def root_links() -> list[str]:
    return [link["ifname"] for link in json.loads(await _ip("-j", "link", "show") or "[]")]


async def root_addresses() -> list[str]:
    """Every IPv4 address of the root netns."""
    out = json.loads(await _ip("-j", "-4", "addr", "show") or "[]")
    return [a["local"] for link in out for a in link.get("addr_info", []) if "local" in a]


@contextlib.asynccontextmanager
async def underlay_lock() -> AsyncIterator[None]:
    """Held while a run picks its subnet and prefix and creates its bridge."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


UNDERLAY_MTU = 1500
"""MTU of the local cluster's underlay, as on most VM networks; overlays on it get 1450
(orch.overlay.links.overlay_mtu_for derives it from the underlay link)."""

# Bridged frames in a host netns skip netfilter: orch filters and NATs at the IP layer only
# (published ports are DNAT on the way in from eth0, before any bridge), and br_netfilter,
# where some other tool loaded it, costs a quarter of the overlay's throughput on this
# path (bench/RESULTS.md). These sysctls are per network namespace.
_NO_BRIDGE_NETFILTER = [
    "net.bridge.bridge-nf-call-iptables=0",
    "net.bridge.bridge-nf-call-ip6tables=0",
    "net.bridge.bridge-nf-call-arptables=0",
]


async def create_underlay(bridge: str, subnet: str, mtu: int = UNDERLAY_MTU) -> None:
    """The bridge, up, with the gateway address of ``subnet``."""
    prefixlen = ipaddress.IPv4Network(subnet).prefixlen
    await _ip("link", "add", bridge, "mtu", str(mtu), "type", "bridge")
    await _ip("addr", "add", f"{gateway_address(subnet)}/{prefixlen}", "dev", bridge)
    await _ip("link", "set", bridge, "up")


async def create_host(
    *, bridge: str, netns: str, veth: str, address: str, subnet: str, mtu: int = UNDERLAY_MTU
) -> None:
    """Host netns ``netns`` with lo up and eth0 = ``address`` on the bridge; no default
    route (the only route is the connected underlay subnet)."""
    prefixlen = ipaddress.IPv4Network(subnet).prefixlen
    await create_netns(netns)
    await _ip(
        "link", "add", veth, "mtu", str(mtu), "type", "veth",
        "peer", "name", "eth0", "mtu", str(mtu), "netns", netns,
    )  # fmt: skip
    await _ip("link", "set", veth, "master", bridge, "up")
    await _ip("-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0")
    await _ip("-n", netns, "link", "set", "eth0", "up")
    if Path("/proc/sys/net/bridge").exists():  # noqa: ASYNC240 (br_netfilter loaded?)
        rc, _, err = await run_command(["sysctl", "-q", "-w", *_NO_BRIDGE_NETFILTER], netns=netns)
        if rc != 0:
            raise NetworkError(f"host {netns}: sysctl bridge-nf-call-*=0: {err.strip()}")


def netns_id(netns: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the named netns: equal to a process's /proc/<pid>/ns/net."""
    try:
        st = os.stat(NETNS_DIR / netns)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(ident: tuple[int, int]) -> list[int]:
    """Every process whose network namespace is ``ident`` (see ``netns_id``)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{entry.name}/ns/net")
            if (st.st_dev, st.st_ino) == ident:
                pids.append(int(entry.name))
    return pids


async def delete_host(netns: str, veth: str) -> None:
    """Kill what still runs inside the host (nothing, after the agent and its containers
    are gone; anything left is ours by construction), then delete the netns and the veth.
    Safe to call twice and for a host that was never (fully) made."""
    ident = netns_id(netns) if netns_exists(netns) else None
    if ident is not None:
        await _kill_all_in(ident, netns)
    await delete_netns(netns)
    await delete_link(veth)  # gone with the netns unless a process still held it


async def _kill_all_in(ident: tuple[int, int], netns: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pids := pids_in_netns(ident):
        if loop.time() > deadline:
            raise NetworkError(f"processes {pids} in host {netns} survive SIGKILL")
        for pid in pids:
            log.warning("killing process %d left in host %s", pid, netns)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.05)


async def delete_link(name: str) -> None:
    rc, _, err = await run_ip(["link", "delete", name])
    if rc != 0 and "Cannot find device" not in err and "does not exist" not in err:
        raise NetworkError(f"ip link delete {name}: {err.strip() or f'exit {rc}'}")


async def set_link_up(name: str, up: bool) -> None:
    """Set a root-netns link up or down (a host's veth: cutting and healing its underlay)."""
    await _ip("link", "set", name, "up" if up else "down")
