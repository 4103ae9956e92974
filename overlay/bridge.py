"""The per-host ``bridge`` network: Docker's default network mode, local to one agent.

One Linux bridge (``<prefix>-br``) in the agent's host netns carries the gateway address
(first host of the subnet). Each container gets a veth: the host end joins the bridge,
the peer sits in the container netns as ``eth0`` with an address from host-local IPAM
(``ipam.IpamStore``, persisted) and a MAC derived from that address (02:42:<ip bytes>).

Containers on the bridge reach each other and the gateway through the connected route of
their subnet. By default there is no default route, no IP forwarding and no NAT, so
container traffic cannot leave the machine (tests and the local cluster must stay local);
``NetworkSettings.default_route`` adds a default route via the gateway for deployments
that set up forwarding and NAT themselves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from orch import model
from orch.errors import NetworkError
from orch.overlay import names
from orch.overlay.driver import Attachment
from orch.overlay.ipam import IpamStore
from orch.overlay.links import HostNet, VethPlug
from orch.overlay.settings import NetworkSettings

log = logging.getLogger(__name__)


class BridgeDriver:
    """``NetworkDriver`` for the agent-local bridge network."""

    def __init__(
        self, settings: NetworkSettings, net: HostNet, ipam: IpamStore | None = None
    ) -> None:
        self.settings = settings
        self.net = net
        self.ipam = ipam or IpamStore(
            settings.network_dir / "ipam" / f"{model.BRIDGE}.json", settings.bridge_subnet
        )
        self._ensure_lock = asyncio.Lock()
        self._ensured = False

    @property
    def network(self) -> str:
        return model.BRIDGE

    @property
    def bridge(self) -> str:
        return self.settings.bridge

    @property
    def gateway(self) -> ipaddress.IPv4Interface:
        """The bridge's own address: the gateway of the subnet."""
        return ipaddress.IPv4Interface(f"{self.ipam.gateway}/{self.ipam.subnet.prefixlen}")

    async def ensure(self) -> None:
        """Make sure the bridge is there. Checked once per driver; a failed plug (the
        bridge was removed behind our back) makes the next attach check again."""
        async with self._ensure_lock:
            if not self._ensured:
                await self.net.ensure_bridge(self.bridge, self.gateway, self.settings.mtu)
                self._ensured = True

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
        await self.ensure()
        host_ifname = host_ifname or names.veth_name(
            self.settings.prefix, endpoint_id, model.BRIDGE
        )
        held_before = self.ipam.address_of(endpoint_id)
        ip = self.ipam.reserve(endpoint_id, address) if address else self.ipam.allocate(endpoint_id)
        iface = ipaddress.IPv4Interface(f"{ip}/{self.ipam.subnet.prefixlen}")
        plug = VethPlug(
            host_ifname=host_ifname,
            netns=netns_name,
            ifname=ifname,
            address=iface,
            mac=mac or model.mac_for(ip),
            mtu=self.settings.mtu,
            master=self.bridge,
            gateway=self.ipam.gateway if self.settings.default_route else None,
        )
        try:
            await self.net.plug_veth(plug)
        except BaseException:
            self._ensured = False
            if held_before is None:
                self.ipam.release(endpoint_id)
            raise
        log.debug("attached %s to %s as %s (%s)", endpoint_id, self.bridge, iface, host_ifname)
        return Attachment(
            network=model.BRIDGE,
            address=str(iface),
            mac=plug.mac,
            gateway=str(self.ipam.gateway),
            ifname=ifname,
            host_ifname=host_ifname,
        )

    async def detach(self, endpoint_id: str, host_ifname: str | None = None) -> None:
        host_ifname = host_ifname or names.veth_name(
            self.settings.prefix, endpoint_id, model.BRIDGE
        )
        await self.net.delete_link(host_ifname)
        self.ipam.release(endpoint_id)

    async def adopt(self, endpoint_id: str, attachment: Attachment) -> bool:
        links = {link.name: link for link in await self.net.list_links()}
        host = links.get(attachment.host_ifname)
        bridge = links.get(self.bridge)
        if host is None or host.kind != "veth" or bridge is None or host.master != bridge.index:
            return False
        try:
            self.ipam.reserve(endpoint_id, attachment.address)
        except NetworkError as exc:
            log.warning("cannot re-adopt %s on %s: %s", endpoint_id, model.BRIDGE, exc)
            return False
        return True

    def owners(self) -> set[str]:
        return self.ipam.owners()

    async def release(self, endpoint_id: str) -> None:
        self.ipam.release(endpoint_id)

    async def remove(self) -> None:
        self._ensured = False
        await self.net.delete_link(self.bridge)
