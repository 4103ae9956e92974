"""The agent's overlay networks: follow ``Assignments.networks`` / ``removed_networks``.

The dispatcher sends, with the node's tasks, every overlay network the node takes part
in together with the complete set of that network's endpoints on other nodes, and
sends a network again whenever that set changes. This module keeps one
``OverlayDriver`` per such network registered with the endpoint manager (so a task's
controller can attach to it) and hands each driver its peer set. It runs before the
worker sees the same message, so the networks a task needs are there when it is
prepared.

Who removes what: the endpoint manager owns the devices (they exist while a local
endpoint uses the network, and go with the last one); this module only registers and
retires drivers. A network that leaves the node's set is retired: its driver is dropped
at once if no endpoint uses it, else when the last one is torn down.

A bad network or a failed peer write is logged, not raised: one network must not stop
the node from following its other networks and tasks (a task on a network that could
not be set up fails with the reason when it is prepared).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import cast

from orch import model
from orch.errors import NetworkError, OrchError
from orch.overlay.endpoints import EndpointManager
from orch.overlay.links import OverlayNet
from orch.overlay.peers import PeerEntry
from orch.overlay.vxlan import OverlayDriver, OverlayNetwork
from orch.proto import dispatcher_pb2, objects_pb2

log = logging.getLogger(__name__)


def network_name(network: objects_pb2.Network) -> str:
    """A network is known (and attached to, in Task.networks) by its spec name."""
    return network.spec.name or network.id


def overlay_of(network: objects_pb2.Network) -> OverlayNetwork:
    """The agent's view of a cluster network. NetworkError if it is unusable."""
    name = network_name(network)
    if not name:
        raise NetworkError("a network without a name")
    if name in model.BUILTIN_NETWORKS:
        raise NetworkError(f"network name {name!r} is reserved for the built-in network")
    if not network.vni:
        raise NetworkError(f"network {name} has no VNI")
    return OverlayNetwork.parse(name, network.vni, network.subnet, network.gateway)


def peers_of(peers: Iterable[dispatcher_pb2.Peer]) -> list[PeerEntry]:
    return [
        PeerEntry(address=p.address, mac=p.mac, node_addr=p.node_addr, task_id=p.task_id)
        for p in peers
    ]


class Networks:
    """Keeps the endpoint manager's overlay drivers in step with the node's networks."""

    def __init__(self, endpoints: EndpointManager, net: OverlayNet | None = None) -> None:
        self.endpoints = endpoints
        self.net = net or cast(OverlayNet, endpoints.net)  # KernelNet is an OverlayNet
        self.drivers: dict[str, OverlayDriver] = {}

    async def apply(self, msg: dispatcher_pb2.Assignments) -> None:
        """Follow one Assignments message (before the worker sees its tasks)."""
        incoming = set()
        for item in msg.networks:
            name = network_name(item.network)
            incoming.add(name)
            try:
                driver = await self._driver_for(item.network)
                changes = await driver.set_peers(peers_of(item.peers))
            except OrchError as exc:
                log.error("overlay network %s: %s", name or "?", exc)
                continue
            if changes:
                log.debug("network %s: peers changed: %s", name, changes)
        gone = set(msg.removed_networks) - incoming
        if msg.full:
            gone |= set(self.drivers) - incoming
        for name in sorted(gone):
            await self.retire(name)

    async def _driver_for(self, network: objects_pb2.Network) -> OverlayDriver:
        spec = overlay_of(network)
        driver = self.drivers.get(spec.name)
        if driver is not None and driver.spec == spec:
            return driver
        if driver is not None:
            # The name now means another network (removed and made again): the old
            # devices go if idle; endpoints still on them keep them until swept.
            log.warning("network %s changed (VNI %d -> %d)", spec.name, driver.spec.vni, spec.vni)
            await driver.remove_if_unused(lambda: self.endpoints.in_use(spec.name))
        driver = OverlayDriver(self.endpoints.settings, self.net, spec)
        self.endpoints.register_driver(driver)
        self.drivers[spec.name] = driver
        log.info("overlay network %s (VNI %d, %s) on this node", spec.name, spec.vni, spec.subnet)
        return driver

    async def retire(self, name: str) -> None:
        """The node no longer takes part in network ``name``."""
        if self.drivers.pop(name, None) is None:
            return
        try:
            dropped = await self.endpoints.retire_driver(name)
        except OrchError as exc:
            log.error("retiring overlay network %s: %s", name, exc)
            return
        log.info(
            "overlay network %s left this node%s",
            name,
            "" if dropped else " (devices go with its last endpoint)",
        )
