"""Tunables of an agent's container networking, one dataclass with a docstring per field.

Kept apart from the drivers so that the agent, the local cluster and the tests build one
``NetworkSettings`` and hand it down; tests shrink timeouts and pick unique prefixes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from orch.errors import ValidationError
from orch.overlay import names


def bridge_subnet_for(index: int) -> str:
    """The ``10.213.<index>.0/24`` subnet: one per agent when agents share a netns."""
    if not 0 <= index <= 255:
        raise ValidationError(f"bridge subnet index {index}: want 0-255")
    return f"10.213.{index}.0/24"


@dataclass(frozen=True)
class NetworkSettings:
    """How one agent wires its containers into networks."""

    prefix: str = "orch"
    """Per-agent name prefix ([a-z0-9], at most 9 characters, no ``-``). Every netns and
    link the agent makes is named ``<prefix>-...``; sweep removes only such objects."""

    state_dir: Path = Path("/var/lib/orch/agent")
    """Directory for endpoint records and IPAM files (``network/`` is made below it), so
    an agent restart keeps address allocations and can re-adopt endpoints."""

    bridge_name: str = ""
    """Name of the local bridge; empty means ``<prefix>-br``."""

    bridge_subnet: str = "10.213.0.0/24"
    """Subnet of the local bridge network. The first host address is the gateway (on the
    bridge). Agents sharing one network namespace need distinct subnets
    (see ``bridge_subnet_for``)."""

    mtu: int = 1500
    """MTU of the bridge and of every veth on it."""

    default_route: bool = False
    """Give bridge containers a default route via the bridge gateway. Off by default: with
    no route out and no NAT, container traffic cannot leave the host (tests and the local
    cluster must not reach outside). Real deployments that want egress turn it on and add
    NAT themselves."""

    host_netns: str | None = None
    """Named netns (``/run/netns/<name>``) that is this agent's "host": the bridge and the
    host ends of veths live there. None means the netns the agent process runs in. Lets
    tests and an in-process local cluster keep the root namespace untouched."""

    host_address: str | None = None
    """The agent's advertise (underlay) address: reported for containers in ``host``
    network mode, the local end of every VXLAN tunnel, and the address published ports
    are reached at. None: no host-mode attachment, no overlay networks, and published
    ports answer on every local address."""

    overlay_mtu: int = 1450
    """MTU of overlay bridges, VXLAN devices and the veths on them: 1500 minus the 50
    bytes of VXLAN encapsulation over an IPv4 underlay with a 1500 MTU."""

    vxlan_port: int = 4789
    """UDP destination port of VXLAN traffic (the IANA port; every agent uses the same)."""

    ip_forward: bool = True
    """Turn on ``net.ipv4.ip_forward`` in the host netns when a port is published: DNAT
    to a container on a local bridge is forwarding (Docker does the same). Only ever in
    the agent's host netns (its own netns in a local cluster)."""

    command_timeout: float = 10.0
    """Unused: netns and links are made natively now, with no ``ip`` subprocess to time
    out. Kept so that existing settings still construct."""

    sweep_concurrency: int = 16
    """How many endpoints (or leftover netns, or veths) a sweep removes side by side."""

    network_dir_name: str = field(default="network", repr=False)
    """Subdirectory of ``state_dir`` that holds this package's files."""

    def __post_init__(self) -> None:
        names.check_prefix(self.prefix)
        if self.bridge_name and len(self.bridge_name) > names.IFNAMSIZ:
            raise ValidationError(f"bridge name {self.bridge_name!r} is longer than 15")
        net = self.subnet
        if net.prefixlen > 30:
            raise ValidationError(f"bridge subnet {net}: want a /30 or larger")
        for what, mtu in (("mtu", self.mtu), ("overlay mtu", self.overlay_mtu)):
            if not 576 <= mtu <= 65535:
                raise ValidationError(f"{what} {mtu}: want 576-65535")
        if not 1 <= self.vxlan_port <= 65535:
            raise ValidationError(f"vxlan port {self.vxlan_port}: want 1-65535")
        if self.sweep_concurrency < 1:
            raise ValidationError(f"sweep concurrency {self.sweep_concurrency}: want 1 or more")

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        """``bridge_subnet`` parsed."""
        try:
            return ipaddress.IPv4Network(self.bridge_subnet)
        except ValueError as exc:
            raise ValidationError(f"bridge subnet {self.bridge_subnet!r}: {exc}") from exc

    @property
    def bridge(self) -> str:
        """The effective bridge name."""
        return self.bridge_name or names.bridge_name(self.prefix)

    @property
    def network_dir(self) -> Path:
        """Where records and IPAM files live."""
        return Path(self.state_dir) / self.network_dir_name
