"""What a VXLAN device must know about remote endpoints, and how to get there cheaply.

An overlay network reaches an endpoint on another node through two static entries on the
local VXLAN device, both written by us (learning is off):

- an FDB entry ``<peer mac> dst <peer's node address>`` (``bridge fdb ... self``): where
  to tunnel a frame for that MAC;
- a neighbour entry ``<peer ip> lladdr <peer mac>`` (``ip neigh ... nud permanent``): with
  the device's ``proxy`` flag on, the kernel answers a container's ARP request from this
  table right on the local VXLAN device, so ARP never crosses the underlay (no flooding,
  no multicast group, no learning).

The dispatcher sends the complete peer set of a network whenever it changes; the driver
turns it into a ``PeerTable`` (what should be in the kernel), compares it with what is
(``PeerTable`` read back once, then kept up to date) and writes only the difference, so a
repeated set costs nothing and a change of one peer costs two netlink requests. Pure.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from orch.errors import NetworkError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerEntry:
    """One endpoint of the network on another node (dispatcher.proto ``Peer``)."""

    address: str
    """The endpoint's address on the network, without prefix length."""
    mac: str
    node_addr: str
    """Underlay address of the node it runs on (the VXLAN remote)."""
    task_id: str = ""


def _ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.split("/")[0]))
    except ValueError as exc:
        raise NetworkError(f"peer {what} {text!r} is not an IPv4 address") from exc


def _mac(text: str) -> str:
    parts = text.lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise NetworkError(f"peer MAC {text!r} is not a MAC address")
    try:
        bytes(int(p, 16) for p in parts)
    except ValueError as exc:
        raise NetworkError(f"peer MAC {text!r} is not a MAC address") from exc
    return ":".join(parts)


@dataclass(frozen=True)
class PeerTable:
    """Static entries of one VXLAN device."""

    fdb: Mapping[str, str] = field(default_factory=dict)
    """MAC -> remote node address."""
    neigh: Mapping[str, str] = field(default_factory=dict)
    """IP -> MAC."""

    @classmethod
    def of(cls, peers: Iterable[PeerEntry], *, local: str | None = None) -> PeerTable:
        """The entries ``peers`` need. A peer on ``local`` (this node's own address) is
        skipped: a local endpoint is reached through the bridge, and an FDB entry
        pointing at ourselves would loop. A malformed peer is logged and skipped, so it
        cannot cut the node off from the rest of the network."""
        fdb: dict[str, str] = {}
        neigh: dict[str, str] = {}
        for peer in peers:
            try:
                node = _ip(peer.node_addr, "node address")
                mac, ip = _mac(peer.mac), _ip(peer.address, "address")
            except NetworkError as exc:
                log.warning("skipping peer %s: %s", peer.task_id or peer.address, exc)
                continue
            if local is not None and node == local:
                continue
            fdb[mac] = node
            neigh[ip] = mac
        return cls(fdb, neigh)


@dataclass(frozen=True)
class PeerChanges:
    """What to write to get from one PeerTable to another. Deletes go first."""

    fdb_del: tuple[str, ...] = ()
    """MACs whose FDB entry goes."""
    neigh_del: tuple[str, ...] = ()
    """IPs whose neighbour entry goes."""
    fdb_set: tuple[tuple[str, str], ...] = ()
    """(MAC, remote) entries to add or replace."""
    neigh_set: tuple[tuple[str, str], ...] = ()
    """(IP, MAC) entries to add or replace."""

    def __bool__(self) -> bool:
        return bool(self.fdb_del or self.neigh_del or self.fdb_set or self.neigh_set)


def diff(current: PeerTable, desired: PeerTable) -> PeerChanges:
    """The writes that turn ``current`` into ``desired``; none if they are equal."""
    return PeerChanges(
        fdb_del=tuple(sorted(set(current.fdb) - set(desired.fdb))),
        neigh_del=tuple(sorted(set(current.neigh) - set(desired.neigh))),
        fdb_set=tuple(sorted((m, d) for m, d in desired.fdb.items() if current.fdb.get(m) != d)),
        neigh_set=tuple(
            sorted((ip, m) for ip, m in desired.neigh.items() if current.neigh.get(ip) != m)
        ),
    )
