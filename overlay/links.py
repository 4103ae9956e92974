"""The kernel operations the network drivers need, behind one small Protocol.

``HostNet`` is everything a driver or the endpoint manager asks of the kernel: named
netns, the links of the agent's host netns, and a veth "plug" into a container netns. The
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from orch.errors import NetworkError
from orch.overlay import netns as ns
from orch.overlay import rtnl
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
                if (str(address.ip), address.network.prefixlen) not in host.addresses(link.index):
                    try:
                        host.add_address(link.index, address)
                    except rtnl.NetlinkError as exc:
                        if not ns.is_errno(exc, *ns.EEXIST_LIKE):
                            raise
                host.set_link(link.index, up=True, mtu=mtu)

        await self._in_host(f"set up bridge {name} in {where}", work)

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
