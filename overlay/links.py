"""The kernel operations the network drivers need, behind one small Protocol.

``HostNet`` is everything a driver or the endpoint manager asks of the kernel: named
netns, the links of the agent's host netns, and a veth "plug" into a container netns. The
drivers hold only decisions (names, addresses, what to undo); ``KernelNet`` does the
netlink work with pyroute2 and translates its errors into ``NetworkError`` at this
boundary. Unit tests swap in an in-memory fake; integration tests use ``KernelNet`` on
real namespaces.

Every link operation happens relative to the agent's host netns (``host_netns``, None
for the netns the process runs in), never the root namespace by assumption. A veth is
created in the host netns with its peer born straight into the container netns (so its
name ``eth0`` only has to be free there) and already carrying its MAC and MTU; then the
container side gets its address, lo and link up, and optionally a default route.

Creates are idempotent (an existing object of the right kind counts as done, a leftover
veth of the same name is replaced); deletes of missing objects are no-ops.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pyroute2.netlink.exceptions import NetlinkError

from orch.errors import NetworkError
from orch.overlay import netns as ns


@dataclass(frozen=True)
class LinkInfo:
    """One link of a netns, as much as sweep and checks need."""

    name: str
    kind: str
    """Link kind from IFLA_INFO_KIND ("veth", "bridge", "vxlan"), "" for none (lo)."""
    index: int
    master: int | None = None


@dataclass(frozen=True)
class VethPlug:
    """A veth to make: host end in the host netns, peer inside a container netns."""

    host_ifname: str
    netns: str
    """Name of the container's named netns."""
    ifname: str
    """Name of the peer inside the container (eth0, eth1, ...)."""
    address: ipaddress.IPv4Interface
    mac: str
    mtu: int
    master: str | None = None
    """Bridge the host end joins, if any."""
    gateway: ipaddress.IPv4Address | None = None
    """If set, the container gets a default route via this address."""


class HostNet(Protocol):
    """Kernel operations, relative to one agent's host netns."""

    async def create_netns(self, name: str) -> str:
        """Create named netns ``name`` (idempotent); return its path."""
        ...

    async def delete_netns(self, name: str) -> bool:
        """Delete named netns ``name``; True if it existed."""
        ...

    def list_netns(self, prefix: str) -> list[str]:
        """Names of named netns starting with ``prefix``."""
        ...

    def netns_exists(self, name: str) -> bool: ...

    async def loopback_up(self, netns: str) -> None:
        """Set lo up inside named netns ``netns``."""
        ...

    async def list_links(self) -> list[LinkInfo]:
        """Links of the host netns."""
        ...

    async def ensure_bridge(self, name: str, address: ipaddress.IPv4Interface, mtu: int) -> None:
        """Bridge ``name`` exists, is up, carries ``address`` and ``mtu``."""
        ...

    async def delete_link(self, name: str) -> bool:
        """Delete host link ``name`` (for a veth: both ends); True if it existed."""
        ...

    async def plug_veth(self, plug: VethPlug) -> None:
        """Make the veth of ``plug`` and configure its container end."""
        ...


LOOPBACK_INDEX = 1
"""The kernel always gives a netns's lo ifindex 1 (LOOPBACK_IFINDEX)."""


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    """Turn netlink and OS errors into one NetworkError line naming ``what``."""
    try:
        yield
    except (NetlinkError, OSError) as exc:
        raise NetworkError(f"{what}: {exc}") from exc


def _kind(msg: Any) -> str:
    return msg.get(("linkinfo", "kind")) or ""


class KernelNet:
    """``HostNet`` on the real kernel through pyroute2 netlink sockets."""

    def __init__(self, host_netns: str | None = None, *, kill_after: float = 10.0) -> None:
        self.host_netns = host_netns
        self.kill_after = kill_after

    def _where(self) -> str:
        return f"netns {self.host_netns}" if self.host_netns else "the agent's netns"

    async def create_netns(self, name: str) -> str:
        return await ns.create_netns(name, kill_after=self.kill_after)

    async def delete_netns(self, name: str) -> bool:
        return await ns.delete_netns(name, kill_after=self.kill_after)

    def list_netns(self, prefix: str) -> list[str]:
        return ns.list_netns(prefix)

    def netns_exists(self, name: str) -> bool:
        return ns.netns_exists(name)

    async def loopback_up(self, netns: str) -> None:
        with _translate(f"set lo up in netns {netns}"):
            async with ns.rtnl(netns) as ipr:
                await ipr.link("set", index=LOOPBACK_INDEX, state="up")

    async def list_links(self) -> list[LinkInfo]:
        with _translate(f"list links of {self._where()}"):
            async with ns.rtnl(self.host_netns) as ipr:
                return [
                    LinkInfo(
                        name=msg.get("ifname"),
                        kind=_kind(msg),
                        index=msg["index"],
                        master=msg.get("master"),
                    )
                    async for msg in await ipr.link("dump")
                ]

    async def ensure_bridge(self, name: str, address: ipaddress.IPv4Interface, mtu: int) -> None:
        with _translate(f"set up bridge {name} in {self._where()}"):
            async with ns.rtnl(self.host_netns) as ipr:
                index = await self._ensure_bridge_link(ipr, name, mtu)
                have = {
                    (a.get("address"), a.get("prefixlen"))
                    async for a in await ipr.addr("dump", index=index)
                }
                if (str(address.ip), address.network.prefixlen) not in have:
                    try:
                        await ipr.addr(
                            "add",
                            index=index,
                            address=str(address.ip),
                            prefixlen=address.network.prefixlen,
                            broadcast=str(address.network.broadcast_address),
                        )
                    except NetlinkError as exc:
                        if not ns.is_errno(exc, *ns.EEXIST_LIKE):
                            raise
                await ipr.link("set", index=index, state="up", mtu=mtu)

    async def _ensure_bridge_link(self, ipr: Any, name: str, mtu: int) -> int:
        found = await _lookup(ipr, name)
        if not found:
            try:
                await ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
            except NetlinkError as exc:
                if not ns.is_errno(exc, *ns.EEXIST_LIKE):
                    raise
            found = await _lookup(ipr, name)
        (msg,) = await ipr.link("get", index=found[0])
        if _kind(msg) != "bridge":
            raise NetworkError(f"link {name} in {self._where()} exists but is not a bridge")
        return found[0]

    async def delete_link(self, name: str) -> bool:
        with _translate(f"delete link {name} in {self._where()}"):
            async with ns.rtnl(self.host_netns) as ipr:
                try:
                    await ipr.link("del", ifname=name)
                except NetlinkError as exc:
                    if ns.is_errno(exc, *ns.ENOENT_LIKE):
                        return False
                    raise
                return True

    async def plug_veth(self, plug: VethPlug) -> None:
        what = f"plug {plug.host_ifname} into netns {plug.netns} as {plug.ifname}"
        with _translate(what):
            async with ns.rtnl(self.host_netns) as ipr, ns.rtnl(plug.netns) as cns:
                master = None
                if plug.master:
                    found = await _lookup(ipr, plug.master)
                    if not found:
                        raise NetworkError(f"{what}: bridge {plug.master} is missing")
                    master = found[0]
                # A leftover of an interrupted attach: replace it (deleting one end of a
                # veth removes the peer too, wherever it is).
                with contextlib.suppress(NetlinkError):
                    await ipr.link("del", ifname=plug.host_ifname)
                if await _lookup(cns, plug.ifname):
                    await cns.link("del", ifname=plug.ifname)
                extra: dict[str, Any] = {"master": master} if master is not None else {}
                # The peer is born inside the container netns with its name, MAC and MTU.
                await ipr.link(
                    "add",
                    ifname=plug.host_ifname,
                    kind="veth",
                    mtu=plug.mtu,
                    peer={
                        "ifname": plug.ifname,
                        "address": plug.mac,
                        "mtu": plug.mtu,
                        "net_ns_fd": ns.netns_path(plug.netns),
                    },
                    **extra,
                )
                try:
                    await ipr.link("set", ifname=plug.host_ifname, state="up")
                    await _configure_container_end(cns, plug)
                except BaseException:
                    with contextlib.suppress(NetlinkError, OSError):
                        await ipr.link("del", ifname=plug.host_ifname)
                    raise


async def _configure_container_end(cns: Any, plug: VethPlug) -> None:
    await cns.link("set", index=LOOPBACK_INDEX, state="up")
    (index,) = await _lookup(cns, plug.ifname)
    await cns.addr(
        "add",
        index=index,
        address=str(plug.address.ip),
        prefixlen=plug.address.network.prefixlen,
        broadcast=str(plug.address.network.broadcast_address),
    )
    await cns.link("set", index=index, state="up")
    if plug.gateway is not None:
        await cns.route("add", dst="0.0.0.0/0", gateway=str(plug.gateway), oif=index)


async def _lookup(ipr: Any, name: str) -> list[int]:
    """[index] of the link called ``name``, or []. One RTM_GETLINK by name: pyroute2's
    link_lookup(ifname=) dumps every link, which is slow on a host with many veths."""
    try:
        msgs = await ipr.link("get", ifname=name)
    except NetlinkError as exc:
        if ns.is_errno(exc, *ns.ENOENT_LIKE):
            return []
        raise
    return [msg["index"] for msg in msgs]
