"""What of the hosts' own addresses and ports a spec must not take. Pure functions of the
view; apply.py refuses with them before anything is written.

A published port is a DNAT on the node's address (overlay/ports.py): publishing 22, 2379
or the manager's port would hand sshd, etcd or the manager's traffic to a container. So
some host ports are reserved on every node: a configured list (ControlSettings:
ssh, DNS, etcd's client and peer ports) and the port every manager serves on, read from
the managers' presence records.

An overlay subnet is routed on every node that joins it: a subnet holding a node's or a
manager's address would black-hole that address for the containers (and, through the
VXLAN bridge, for the node), and one overlapping the agents' local bridge subnet would
make two routes for one address. networks.py refuses such subnets, and the pool skips
them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable

from orch.manager.controlapi.decision import View
from orch.manager.state.api import Kind
from orch.proto import specs_pb2

Subnets = list[tuple[ipaddress.IPv4Network, str]]


def split_addr(addr: str) -> tuple[str, int | None]:
    """``"10.0.0.1:7700"`` -> ("10.0.0.1", 7700); ``"[::1]:7700"``, ``"10.0.0.1"`` too."""
    host, sep, port = addr.rpartition(":")
    if not sep or "]" in port or (":" in host and not host.endswith("]")):
        return addr.strip("[]"), None  # no port, or an IPv6 address without brackets
    return host.strip("[]"), int(port) if port.isdigit() else None


def reserved_ports(view: View, configured: Collection[int]) -> dict[int, str]:
    """Host ports no service may publish, each with why."""
    reasons = {port: "reserved on every node (the manager's reserved_ports)" for port in configured}
    for manager in view.objects(Kind.MANAGER):
        port = split_addr(manager.addr)[1]
        if port is not None:
            reasons[port] = f"the port manager {manager.id} serves on"
    return reasons


def port_problems(
    view: View, specs: Iterable[specs_pb2.ServiceSpec], configured: Collection[int]
) -> list[str]:
    """One line per published port that is reserved (either protocol: one rule for both
    is simpler to state and to get right)."""
    reserved = reserved_ports(view, configured)
    problems = []
    for i, spec in enumerate(specs):
        for j, port in enumerate(spec.ports):
            why = reserved.get(port.published)
            if why is not None:
                problems.append(
                    f"services[{i}] ({spec.name}): spec.ports[{j}].published: host port "
                    f"{port.published} is reserved: {why} (accepted: another port)"
                )
    return problems


def host_subnets(view: View, bridge_subnets: Iterable[str]) -> Subnets:
    """The addresses overlay subnets must stay clear of: every node's and manager's
    address (as a /32) and the agents' local bridge subnets, each named."""
    taken: Subnets = [
        (ipaddress.IPv4Network(s), "the agents' bridge subnet") for s in bridge_subnets
    ]
    hosts = [
        (n.description.addr, f"node {n.description.hostname or n.id}")
        for n in view.objects(Kind.NODE)
    ]
    hosts += [(m.addr, f"manager {m.id}") for m in view.objects(Kind.MANAGER)]
    for addr, whose in hosts:
        try:
            address = ipaddress.IPv4Address(split_addr(addr)[0])
        except ValueError:  # a hostname or IPv6: it cannot fall inside an IPv4 subnet
            continue
        taken.append((ipaddress.IPv4Network(address), f"the address of {whose}"))
    return taken
