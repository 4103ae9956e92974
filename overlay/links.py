"""The kernel operations the network drivers need, behind one small Protocol.

``HostNet`` is everything a driver or the endpoint manager asks of the kernel: named
netns, the links of the agent's host netns, and a veth "plug" into a container netns;
``OverlayNet`` adds what a VXLAN overlay needs (its bridge + VXLAN device, static FDB and
neighbour entries, see ``peers.py``). The
drivers hold only decisions (names, addresses, what to undo); ``KernelNet`` does the
netlink work (``rtnl``, on worker threads) and translates its errors into
``NetworkError`` at this boundary. Unit tests swap in an in-memory fake; integration tests use ``KernelNet`` on
real namespaces.

Every link operation happens relative to the agent's host netns (``host_netns``, None
for the netns the process runs in), never the root namespace by assumption. A veth is
created in the host netns with its peer born straight into the container netns (so its
name ``eth0`` only has to be free there) already carrying its MAC and MTU, the host end
up and on its bridge: one request. Then the container end comes up and gets its address
and optionally a default route (lo is up since ``create_netns``). A plug is one
worker thread: it opens its host socket, then moves into the container netns and opens
the other one there.

Creates are idempotent (an existing object of the right kind counts as done, a leftover
veth of the same name is replaced); deletes of missing objects are no-ops.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from orch.errors import NetworkError
from orch.overlay import netns as ns
from orch.overlay import rtnl
from orch.overlay.peers import PeerChanges, PeerTable
from orch.overlay.rtnl import Rtnl

T = TypeVar("T")


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
        """Create named netns ``name`` with lo up (idempotent); return its path."""
        ...

    async def delete_netns(self, name: str) -> bool:
        """Delete named netns ``name``; True if it existed."""
        ...

    def list_netns(self, prefix: str) -> list[str]:
        """Names of named netns starting with ``prefix``."""
        ...

    def netns_exists(self, name: str) -> bool: ...

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


@dataclass(frozen=True)
class OverlayDevices:
    """The host-side objects of one overlay network: a bridge and its VXLAN port."""

    bridge: str
    vxlan: str
    vni: int
    local: ipaddress.IPv4Address
    """The agent's underlay address: the tunnels' source."""
    gateway: ipaddress.IPv4Interface | None
    """Address of the bridge (the network's gateway), so the host reaches local
    endpoints (published ports); None for a pure layer-2 network."""
    mtu: int
    port: int
    """UDP destination port."""


class OverlayNet(HostNet, Protocol):
    """``HostNet`` plus the VXLAN operations of an overlay driver."""

    async def ensure_overlay(self, devices: OverlayDevices) -> bool:
        """Bridge and VXLAN device exist, are up, the VXLAN device is a port of the bridge.
        True if the VXLAN device was (re)made, so it holds no entries."""
        ...

    async def read_peers(self, vxlan: str) -> PeerTable:
        """The static FDB and permanent neighbour entries on ``vxlan`` (empty if absent)."""
        ...

    async def write_peers(self, vxlan: str, changes: PeerChanges) -> None:
        """Delete, then add or replace, the entries ``changes`` lists on ``vxlan``."""
        ...


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    """Turn netlink and OS errors into one NetworkError line naming ``what``."""
    try:
        yield
    except OSError as exc:
        raise NetworkError(f"{what}: {exc.strerror or exc}") from exc


class KernelNet:
    """``HostNet`` on the real kernel through rtnetlink sockets on worker threads."""

    def __init__(self, host_netns: str | None = None) -> None:
        self.host_netns = host_netns

    def _where(self) -> str:
        return f"netns {self.host_netns}" if self.host_netns else "the agent's netns"

    async def _in_host(self, what: str, fn: Callable[[], T]) -> T:
        with _translate(what):
            return await ns.run_in_netns(self.host_netns, fn)

    async def create_netns(self, name: str) -> str:
        return await ns.create_netns(name)

    async def delete_netns(self, name: str) -> bool:
        return await ns.delete_netns(name)

    def list_netns(self, prefix: str) -> list[str]:
        return ns.list_netns(prefix)

    def netns_exists(self, name: str) -> bool:
        return ns.netns_exists(name)

    async def list_links(self) -> list[LinkInfo]:
        def work() -> list[LinkInfo]:
            with Rtnl() as host:
                return [LinkInfo(x.name, x.kind, x.index, x.master) for x in host.links()]

        return await self._in_host(f"list links of {self._where()}", work)

    async def ensure_bridge(self, name: str, address: ipaddress.IPv4Interface, mtu: int) -> None:
        where = self._where()

        def work() -> None:
            with Rtnl() as host:
                link = _ensure_bridge_link(host, name, mtu, where)
                if (str(address.ip), address.network.prefixlen) not in host.addresses(link.index):
                    try:
                        host.add_address(link.index, address)
                    except rtnl.NetlinkError as exc:
                        if not ns.is_errno(exc, *ns.EEXIST_LIKE):
                            raise
                host.set_link(link.index, up=True, mtu=mtu)

        await self._in_host(f"set up bridge {name} in {where}", work)

    async def ensure_overlay(self, devices: OverlayDevices) -> bool:
        where = self._where()
        what = f"set up overlay {devices.bridge}/{devices.vxlan} (VNI {devices.vni}) in {where}"
        return await self._in_host(what, lambda: _ensure_overlay(devices, where))

    async def read_peers(self, vxlan: str) -> PeerTable:
        return await self._in_host(f"read peers of {vxlan}", lambda: _read_peers(vxlan))

    async def write_peers(self, vxlan: str, changes: PeerChanges) -> None:
        await self._in_host(f"write peers of {vxlan}", lambda: _write_peers(vxlan, changes))

    async def delete_link(self, name: str) -> bool:
        def work() -> bool:
            with Rtnl() as host:
                return host.delete_link(name)

        return await self._in_host(f"delete link {name} in {self._where()}", work)

    async def plug_veth(self, plug: VethPlug) -> None:
        what = f"plug {plug.host_ifname} into netns {plug.netns} as {plug.ifname}"
        await self._in_host(what, lambda: _plug(plug, what))


def _plug(plug: VethPlug, what: str) -> None:
    """The whole plug, on a throwaway thread that starts in the host netns."""
    cfd = ns.open_netns(plug.netns)
    try:
        with Rtnl() as host:
            master = None
            if plug.master:
                bridge = host.link(plug.master)
                if bridge is None:
                    raise NetworkError(f"{what}: bridge {plug.master} is missing")
                master = bridge.index
            # A leftover of an interrupted attach: replace it (deleting one end of a
            # veth removes the peer too, wherever it is).
            host.delete_link(plug.host_ifname)
            ns.enter_fd(cfd, plug.netns)  # this thread ends afterwards
            with Rtnl() as cont:
                cont.delete_link(plug.ifname)
                host.add_veth(
                    rtnl.veth_body(
                        plug.host_ifname,
                        mtu=plug.mtu,
                        peer_name=plug.ifname,
                        peer_mac=plug.mac,
                        peer_netns_fd=cfd,
                        master=master,
                    )
                )
                try:
                    _configure_container_end(cont, plug)
                except BaseException:
                    with contextlib.suppress(OSError):
                        host.delete_link(plug.host_ifname)
                    raise
    finally:
        os.close(cfd)


def _configure_container_end(cont: Rtnl, plug: VethPlug) -> None:
    link = cont.link(plug.ifname)
    if link is None:
        raise NetworkError(f"{plug.ifname} did not appear in netns {plug.netns}")
    cont.set_link(link.index, up=True)
    cont.add_address(link.index, plug.address)
    if plug.gateway is not None:
        cont.add_default_route(plug.gateway, link.index)


def _ensure_bridge_link(host: Rtnl, name: str, mtu: int, where: str) -> rtnl.Link:
    link = host.link(name)
    if link is None:
        try:
            host.add_bridge(name, mtu)
        except rtnl.NetlinkError as exc:
            if not ns.is_errno(exc, *ns.EEXIST_LIKE):
                raise
        link = host.link(name)
    if link is None or link.kind != "bridge":
        raise NetworkError(f"link {name} in {where} exists but is not a bridge")
    return link


def _ensure_overlay(d: OverlayDevices, where: str) -> bool:
    """The whole ensure on one thread in the host netns: a few requests when all is there."""
    with Rtnl() as host:
        bridge = _ensure_bridge_link(host, d.bridge, d.mtu, where)
        if d.gateway is not None:
            held = (str(d.gateway.ip), d.gateway.network.prefixlen)
            if held not in host.addresses(bridge.index):
                try:
                    host.add_address(bridge.index, d.gateway)
                except rtnl.NetlinkError as exc:
                    if not ns.is_errno(exc, *ns.EEXIST_LIKE):
                        raise
        host.set_link(bridge.index, up=True, mtu=d.mtu)
        vx = host.link(d.vxlan)
        if vx is not None and vx.kind != "vxlan":
            raise NetworkError(f"link {d.vxlan} in {where} exists but is not a vxlan device")
        if vx is not None and vx.vni != d.vni:
            raise NetworkError(
                f"vxlan device {d.vxlan} in {where} carries VNI {vx.vni}, not {d.vni}: "
                "two networks' device names clash (use a shorter agent prefix)"
            )
        made = False
        if vx is not None and vx.local != str(d.local):
            host.delete_link(d.vxlan)  # the advertise address changed: remake it
            vx = None
        if vx is None:
            holder = _underlay_index(host, d.local)
            host.add_vxlan(
                rtnl.vxlan_body(
                    d.vxlan,
                    vni=d.vni,
                    local=d.local,
                    port=d.port,
                    mtu=d.mtu,
                    link=holder,
                    master=bridge.index,
                )
            )
            made = True
            vx = host.link(d.vxlan)
            if vx is None:
                raise NetworkError(f"vxlan device {d.vxlan} did not appear in {where}")
        host.set_link(vx.index, up=True, mtu=d.mtu, master=bridge.index)
        # The bridge must not learn remote MACs on the VXLAN port: every remote endpoint is a
        # static FDB entry on the VXLAN device, so a removed peer leaves nothing behind (a
        # learned entry would linger for the bridge's ageing time, 300 s).
        host.set_port_learning(vx.index, False)
        return made


VXLAN_OVERHEAD = 50
"""Bytes a VXLAN header adds on IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14."""


def overlay_mtu_for(local: str, default: int = 1500) -> int:
    """The MTU overlay networks get on this host: the MTU of the underlay link holding
    ``local`` (the advertise address) minus the VXLAN overhead, so an encapsulated frame
    never needs fragmenting. ``default`` stands for the underlay MTU when no link holds
    ``local``. Runs in the calling thread's netns."""
    with Rtnl() as host:
        index = _underlay_index(host, ipaddress.IPv4Address(local))
        links = {link.index: link for link in host.links()} if index is not None else {}
    underlay = links[index].mtu if index in links and links[index].mtu else default
    return underlay - VXLAN_OVERHEAD


def _underlay_index(host: Rtnl, local: ipaddress.IPv4Address) -> int | None:
    """The link holding ``local``, to pin the tunnels to it; None if none does or it is
    lo (then routing picks the way, as for ``ip link add ... vxlan`` without ``dev``)."""
    for index, address, _ in host.all_addresses():
        if address == str(local) and index != ns.LOOPBACK_INDEX:
            return index
    return None


def _read_peers(vxlan: str) -> PeerTable:
    with Rtnl() as host:
        link = host.link(vxlan)
        if link is None:
            return PeerTable()
        fdb = {
            n.lladdr: n.dst
            for n in host.neighbours(socket.AF_BRIDGE)
            if n.index == link.index
            and n.flags & rtnl.NTF_SELF
            and n.dst
            and n.lladdr
            and n.lladdr != "00:00:00:00:00:00"
        }
        neigh = {
            n.dst: n.lladdr
            for n in host.neighbours(socket.AF_INET)
            if n.index == link.index and n.state & rtnl.NUD_PERMANENT and n.dst and n.lladdr
        }
        return PeerTable(fdb, neigh)


def _write_peers(vxlan: str, changes: PeerChanges) -> None:
    with Rtnl() as host:
        link = host.link(vxlan)
        if link is None:
            raise NetworkError(f"vxlan device {vxlan} is missing")
        for mac in changes.fdb_del:
            host.delete_neigh(rtnl.fdb_body(link.index, mac))
        for ip in changes.neigh_del:
            host.delete_neigh(rtnl.arp_body(link.index, ipaddress.IPv4Address(ip)))
        for mac, dst in changes.fdb_set:
            host.set_neigh(rtnl.fdb_body(link.index, mac, ipaddress.IPv4Address(dst)))
        for ip, mac in changes.neigh_set:
            host.set_neigh(rtnl.arp_body(link.index, ipaddress.IPv4Address(ip), mac))
