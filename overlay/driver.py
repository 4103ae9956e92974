"""What a network driver is: the interface the endpoint manager drives, and its result.

One driver object serves one network on this agent (the local ``bridge`` now; one VXLAN
overlay per network next). The endpoint manager owns a container's netns and decides the
interface names; a driver only plugs that netns into its network and unplugs it, so every
driver reuses the same netns + veth code (``links.HostNet.plug_veth``).

Lifecycle rules, which every driver keeps:

- ``ensure()`` makes the host-side network objects (bridge, vxlan, ...); idempotent, and
  called before each attach (cheap), so a bridge deleted behind our back comes back.
- ``attach()`` is idempotent per (endpoint, network): a leftover of an interrupted attach
  is replaced; an owner keeps the address it already holds.
- ``detach()`` is safe to call twice and for an endpoint it never saw.
- ``adopt()`` checks that an attachment recorded before an agent restart is still in the
  kernel and re-claims its address; False means the caller should tear down and redo.
- ``release()`` frees an address whose endpoint is gone without touching links.
- ``remove()`` deletes the host-side network objects (shutdown of a local cluster).

A driver whose host-side objects exist only while endpoints use them (a VXLAN overlay:
``IdleRemovable``) also offers ``remove_if_unused``; the endpoint manager, which knows
every endpoint of every network from its records, calls it after a teardown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Attachment:
    """One container interface on one network, as the agent reports it."""

    network: str
    """Network name ("bridge", "host", or an overlay network's name)."""
    address: str
    """Container address with prefix length, e.g. "10.213.0.2/24"; for "host" the host's."""
    mac: str
    """MAC of the container interface ("" for host mode)."""
    gateway: str
    """Gateway address of the network, without prefix ("" for host mode)."""
    ifname: str
    """Interface name inside the container (eth0, eth1, ...; "" for host mode)."""
    host_ifname: str = ""
    """Host-side veth name ("" for host mode)."""

    @property
    def ip(self) -> str:
        """The address without prefix length."""
        return self.address.split("/")[0]

    def to_json(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Attachment:
        return cls(**{k: str(data[k]) for k in cls.__dataclass_fields__ if k in data})


class NetworkDriver(Protocol):
    """Plugs container netns into one network."""

    @property
    def network(self) -> str:
        """Name of the network this driver serves."""
        ...

    async def ensure(self) -> None:
        """Create the host-side objects of the network (idempotent)."""
        ...

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
        """Plug netns ``netns_name`` in as ``ifname``. ``address`` ("ip" or "ip/len") is
        one allocated elsewhere (cluster IPAM); None lets the driver allocate. ``mac``
        likewise (default: derived from the address, ``model.mac_for``)."""
        ...

    async def detach(self, endpoint_id: str, host_ifname: str | None = None) -> None:
        """Unplug the endpoint and free its address. Safe twice."""
        ...

    async def adopt(self, endpoint_id: str, attachment: Attachment) -> bool:
        """After a restart: True if the attachment is intact (and its address re-held)."""
        ...

    def owners(self) -> set[str]:
        """Endpoint ids holding an address of this network (for sweep)."""
        ...

    async def release(self, endpoint_id: str) -> None:
        """Free the endpoint's address only (sweep of an allocation no record claims)."""
        ...

    async def remove(self) -> None:
        """Delete the host-side objects of the network."""
        ...


@runtime_checkable
class IdleRemovable(Protocol):
    """A driver whose host-side objects should go when no endpoint uses them."""

    async def remove_if_unused(self, in_use: Callable[[], bool]) -> bool:
        """Delete the host-side objects unless ``in_use()``, asked while no attach of
        this driver can run; True if they were removed."""
        ...
