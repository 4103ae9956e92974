"""VXLAN overlay networks: one ``OverlayDriver`` per network the agent takes part in.

On each node a network is a Linux bridge (``<prefix>-o<code>``, carrying the network's
gateway address so the host reaches local endpoints, e.g. for published ports) with one
VXLAN device (``<prefix>-v<code>``: the network's VNI, UDP 4789, local = the agent's
advertise address, pinned to the underlay link holding it, no learning, ARP proxy) as a
port. Containers join through a veth on the bridge like on the local ``bridge`` network,
with the address and MAC the manager's cluster IPAM chose. MTU 1450 everywhere, leaving
room for the 50-byte VXLAN header on a 1500-byte underlay.

Remote endpoints are static entries on the VXLAN device (``peers.py``): the dispatcher
pushes a network's complete peer set, ``set_peers`` writes the difference. Nothing is
learnt or flooded across the underlay, so a stale peer is gone the moment its entries
are.

The devices live only while endpoints use them: ``ensure`` (each attach) makes them and
programs the peers known so far; the endpoint manager, which owns the records of every
endpoint, calls ``remove_if_unused`` after a teardown, and the devices go with the last
endpoint. The peer set stays with the driver object, so a new first endpoint gets it
back. After an agent restart the driver finds existing devices and reads their entries
back before it writes, so it never needs to remember what it wrote.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from orch import model
from orch.errors import NetworkError
from orch.overlay import names
from orch.overlay.driver import Attachment
from orch.overlay.links import OverlayDevices, OverlayNet, VethPlug
from orch.overlay.peers import PeerChanges, PeerEntry, PeerTable, diff
from orch.overlay.settings import NetworkSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OverlayNetwork:
    """What an agent needs to know of a cluster network (objects.proto ``Network``)."""

    name: str
    vni: int
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None = None
    """Never given to a task; lives on every node's bridge of the network."""

    @classmethod
    def parse(cls, name: str, vni: int, subnet: str, gateway: str = "") -> OverlayNetwork:
        """From the strings of a ``Network`` message; NetworkError if they are bad."""
        try:
            net = ipaddress.IPv4Network(subnet)
            gw = ipaddress.IPv4Address(gateway) if gateway else None
        except ValueError as exc:
            raise NetworkError(f"network {name}: {exc}") from exc
        if gw is not None and gw not in net:
            raise NetworkError(f"network {name}: gateway {gw} is outside {net}")
        names.overlay_code("x", vni)  # validates the VNI range
        return cls(name, vni, net, gw)


class OverlayDriver:
    """``NetworkDriver`` (and ``IdleRemovable``) for one VXLAN overlay network."""

    def __init__(self, settings: NetworkSettings, net: OverlayNet, network: OverlayNetwork) -> None:
        self.settings = settings
        self.net = net
        self.spec = network
        self.bridge = names.overlay_bridge_name(settings.prefix, network.vni)
        self.vxlan = names.overlay_vxlan_name(settings.prefix, network.vni)
        self._lock = asyncio.Lock()
        """Serialises ensure, remove and peer writes of this network."""
        self._ensured = False
        self._desired = PeerTable()
        self._programmed: PeerTable | None = None
        """What the VXLAN device holds, as far as we know; None: read it back first."""

    @property
    def network(self) -> str:
        return self.spec.name

    @property
    def peers(self) -> PeerTable:
        """The entries the device should hold (the last ``set_peers``)."""
        return self._desired

    def devices(self) -> OverlayDevices:
        local = self.settings.host_address
        if not local:
            raise NetworkError(
                f"overlay network {self.network} needs the agent's advertise address "
                "(--advertise-addr): it is the local end of the VXLAN tunnels"
            )
        gateway = None
        if self.spec.gateway is not None:
            gateway = ipaddress.IPv4Interface(f"{self.spec.gateway}/{self.spec.subnet.prefixlen}")
        return OverlayDevices(
            bridge=self.bridge,
            vxlan=self.vxlan,
            vni=self.spec.vni,
            local=ipaddress.IPv4Address(local),
            gateway=gateway,
            mtu=self.settings.overlay_mtu,
            port=self.settings.vxlan_port,
        )

    # -- devices ----------------------------------------------------------------------

    async def ensure(self) -> None:
        """Bridge and VXLAN device exist and hold the current peer set."""
        async with self._lock:
            if self._ensured:
                return
            made = await self.net.ensure_overlay(self.devices())
            if made:
                self._programmed = PeerTable()
            await self._sync()
            self._ensured = True

    async def _sync(self) -> PeerChanges:
        """Write what differs between the kernel and ``_desired`` (lock held)."""
        if self._programmed is None:
            self._programmed = await self.net.read_peers(self.vxlan)
        changes = diff(self._programmed, self._desired)
        if changes:
            try:
                await self.net.write_peers(self.vxlan, changes)
            except BaseException:
                self._programmed = None  # half written: read it back next time
                raise
        self._programmed = self._desired
        return changes

    async def set_peers(self, peers: Iterable[PeerEntry]) -> PeerChanges:
        """Make the VXLAN device hold exactly ``peers`` (the network's complete set on
        other nodes); returns what was written. Before the devices exist (no local
        endpoint yet) the set is only kept, and written by the first ``ensure``."""
        desired = PeerTable.of(peers, local=self.settings.host_address)
        async with self._lock:
            self._desired = desired
            known = self._ensured or self._programmed is not None
            if not known and not await self._devices_present():
                return PeerChanges()
            return await self._sync()

    async def _devices_present(self) -> bool:
        """After an agent restart the devices of adopted endpoints are there although
        this driver never ensured them: their peers must follow too."""
        links = {link.name: link.kind for link in await self.net.list_links()}
        return links.get(self.vxlan) == "vxlan"

    async def remove(self) -> None:
        async with self._lock:
            await self._delete_devices()

    async def remove_if_unused(self, in_use: Callable[[], bool]) -> bool:
        async with self._lock:
            if in_use():
                return False
            await self._delete_devices()
            return True

    async def _delete_devices(self) -> None:
        self._ensured = False
        self._programmed = None
        await self.net.delete_link(self.vxlan)
        await self.net.delete_link(self.bridge)

    # -- endpoints --------------------------------------------------------------------

    def _interface(self, address: str | None) -> ipaddress.IPv4Interface:
        if not address:
            raise NetworkError(
                f"overlay network {self.network}: no address given (the manager's IPAM "
                "allocates overlay addresses)"
            )
        try:
            ip = ipaddress.IPv4Address(address.split("/")[0])
        except ValueError as exc:
            raise NetworkError(f"overlay network {self.network}: {exc}") from exc
        if ip not in self.spec.subnet:
            raise NetworkError(
                f"overlay network {self.network}: address {address} is outside {self.spec.subnet}"
            )
        return ipaddress.IPv4Interface(f"{ip}/{self.spec.subnet.prefixlen}")

    async def attach(
        self,
        endpoint_id: str,
        netns_name: str,
        *,
        ifname: str = "eth0",
        host_ifname: str | None = None,
        address: str | None = None,
        mac: str | None = None,
    ) -> Attachment:
        iface = self._interface(address)
        host_ifname = host_ifname or names.veth_name(
            self.settings.prefix, endpoint_id, self.network
        )
        plug = VethPlug(
            host_ifname=host_ifname,
            netns=netns_name,
            ifname=ifname,
            address=iface,
            mac=(mac or model.mac_for(iface.ip)).lower(),
            mtu=self.settings.overlay_mtu,
            master=self.bridge,
        )
        await self.ensure()
        try:
            await self.net.plug_veth(plug)
        except BaseException:
            self._ensured = False  # the bridge may have gone behind our back
            raise
        log.debug("attached %s to overlay %s as %s", endpoint_id, self.network, iface)
        return Attachment(
            network=self.network,
            address=str(iface),
            mac=plug.mac,
            gateway=str(self.spec.gateway or ""),
            ifname=ifname,
            host_ifname=host_ifname,
        )

    async def detach(self, endpoint_id: str, host_ifname: str | None = None) -> None:
        host_ifname = host_ifname or names.veth_name(
            self.settings.prefix, endpoint_id, self.network
        )
        await self.net.delete_link(host_ifname)

    async def adopt(self, endpoint_id: str, attachment: Attachment) -> bool:
        links = {link.name: link for link in await self.net.list_links()}
        host = links.get(attachment.host_ifname)
        bridge = links.get(self.bridge)
        return not (
            host is None or host.kind != "veth" or bridge is None or host.master != bridge.index
        )

    def owners(self) -> set[str]:
        """None: overlay addresses belong to the cluster's IPAM, not to this agent."""
        return set()

    async def release(self, endpoint_id: str) -> None:
        """Nothing to free locally (see ``owners``)."""
