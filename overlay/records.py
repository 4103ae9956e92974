"""Endpoint records and sweep plans: what the endpoint manager persists and decides. Pure.

An endpoint's record (``<state_dir>/network/endpoints/<id>.json``, written by
``endpoints.EndpointManager``) names the netns, host veths, attachments and published ports
of one container endpoint; ``plan_sweep`` decides from the records and a listing of the
kernel objects what a sweep removes. Kept apart from the manager (the IO shell) so both
stay small and the decisions are tested without a kernel.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from orch.overlay import names
from orch.overlay.driver import Attachment
from orch.overlay.links import LinkInfo
from orch.overlay.netns import netns_path
from orch.overlay.ports import PortMapping

SETUP = "setup"
READY = "ready"


@dataclass(frozen=True)
class EndpointInfo:
    """What the runtime and the agent's status report need about an endpoint."""

    endpoint_id: str
    networks: tuple[str, ...]
    netns_path: str | None
    """Path of the container's netns for the runc config; None for host mode."""
    attachments: tuple[Attachment, ...] = ()

    @property
    def addresses(self) -> dict[str, str]:
        """Network name -> address without prefix length."""
        return {a.network: a.ip for a in self.attachments}


@dataclass
class EndpointRecord:
    """The persisted state of one endpoint (see the module docstring for why)."""

    endpoint_id: str
    networks: list[str]
    netns: str | None
    host_ifnames: dict[str, str] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    state: str = SETUP
    ports: list[PortMapping] = field(default_factory=list)
    """Published ports (DNAT to the first attachment's address)."""

    def info(self) -> EndpointInfo:
        return EndpointInfo(
            endpoint_id=self.endpoint_id,
            networks=tuple(self.networks),
            netns_path=netns_path(self.netns) if self.netns else None,
            attachments=tuple(self.attachments),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "endpoint_id": self.endpoint_id,
            "networks": self.networks,
            "netns": self.netns,
            "host_ifnames": self.host_ifnames,
            "attachments": [a.to_json() for a in self.attachments],
            "state": self.state,
            "ports": [p.to_json() for p in self.ports],
        }

    @classmethod
    def from_json(cls, data: dict) -> EndpointRecord:
        return cls(
            endpoint_id=str(data["endpoint_id"]),
            networks=[str(n) for n in data["networks"]],
            netns=data.get("netns"),
            host_ifnames={str(k): str(v) for k, v in (data.get("host_ifnames") or {}).items()},
            attachments=[Attachment.from_json(a) for a in data.get("attachments") or []],
            state=str(data.get("state", SETUP)),
            ports=[PortMapping.from_json(p) for p in data.get("ports") or []],
        )


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep removes; also its report."""

    endpoints: tuple[str, ...] = ()
    """Endpoints whose records are torn down (unfinished, or not in ``live``)."""
    netns: tuple[str, ...] = ()
    """Prefixed netns no record claims."""
    links: tuple[str, ...] = ()
    """Prefixed host veths no record claims."""
    owners: tuple[tuple[str, str], ...] = ()
    """(network, endpoint id) address allocations no record claims."""
    errors: tuple[str, ...] = ()
    """What could not be removed (filled in when the plan is carried out)."""


def plan_sweep(
    prefix: str,
    *,
    netns_names: Iterable[str],
    links: Iterable[LinkInfo],
    owners: Mapping[str, Collection[str]],
    records: Mapping[str, EndpointRecord],
    busy: Collection[str],
    live: Collection[str] | None,
    devices: Collection[str] = (),
) -> SweepPlan:
    """Decide what a sweep removes. Pure.

    ``busy`` endpoints (an operation is running on them) are never touched. ``live`` None
    keeps every finished record; otherwise records not in ``live`` are torn down too.
    Overlay bridges and VXLAN devices are removed unless named in ``devices`` (those of
    registered drivers, which decide themselves whether they are in use).
    """
    doomed = sorted(
        eid
        for eid, rec in records.items()
        if eid not in busy and (rec.state != READY or (live is not None and eid not in live))
    )
    claimed_ns = {rec.netns for rec in records.values() if rec.netns}
    claimed_ns |= {names.netns_name(prefix, eid) for eid in busy}
    claimed_links = {n for rec in records.values() for n in rec.host_ifnames.values()}
    known = set(records) | set(busy)
    return SweepPlan(
        endpoints=tuple(doomed),
        netns=tuple(
            sorted(
                n
                for n in netns_names
                if names.endpoint_of_netns(prefix, n) is not None and n not in claimed_ns
            )
        ),
        links=tuple(
            sorted(
                link.name
                for link in links
                if (
                    link.kind == "veth"
                    and names.is_veth_name(prefix, link.name)
                    and link.name not in claimed_links
                )
                or (
                    link.kind in ("bridge", "vxlan")
                    and names.is_overlay_name(prefix, link.name)
                    and link.name not in devices
                )
            )
        ),
        owners=tuple(
            sorted((net, eid) for net, who in owners.items() for eid in who if eid not in known)
        ),
    )
