"""Networks in the Control API: what Apply writes for network specs, what removal writes,
and what `orch network ls` shows. Pure functions of the view; server.py commits.

A new network gets its VNI and, when the spec has none, a subnet from the cluster pool
(ipam.py decides). Both are made unique in etcd by claim keys created only if absent in
the same transaction as the network (``/orch/v1/claims/vni/4096``,
``/orch/v1/claims/subnet/10.10.0.0/24``), so two applies racing for the same value cannot
both win. Subnets the user gives are checked for overlap against every network the view
holds; the transaction then also carries a guard that no network appeared or changed since
that view (``QuietSince``), which closes the race between overlapping but unequal subnets
that claims alone cannot see. A lost race is ConflictError; the Apply handler re-reads
and decides again.

Networks are immutable but for their labels: a changed driver or subnet is refused with a
message saying to remove and re-create the network. Removal is refused while a service
lists the network, or a task of a removed service still holds it; it deletes the network
and its claims. Leases on it are gone by then (the allocator releases them when tasks end).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime

from orch import model
from orch.errors import NotFoundError, ValidationError
from orch.manager.allocator import ipam
from orch.manager.controlapi import hosts
from orch.manager.controlapi.decision import Decision, InUseError, View, change, respecced
from orch.manager.state.api import Create, Delete, Kind, Op, QuietSince, Unmodified, Versioned
from orch.proto import control_pb2, objects_pb2, specs_pb2

DEFAULT_DRIVER = "overlay"


def normalize(spec: specs_pb2.NetworkSpec) -> specs_pb2.NetworkSpec:
    """A copy with defaults filled in, so stored specs have one spelling."""
    out = specs_pb2.NetworkSpec()
    out.CopyFrom(spec)
    if not out.driver:
        out.driver = DEFAULT_DRIVER
    return out


def immutable_problems(specs: list[specs_pb2.NetworkSpec], view: View) -> list[str]:
    """Changes to an existing network other than its labels."""
    problems = []
    for i, spec in enumerate(specs):
        current = view.get(Kind.NETWORK, spec.name)
        if current is None:
            continue
        network: objects_pb2.Network = current.obj
        where = f"networks[{i}] ({spec.name})"
        tail = "networks are immutable but for labels; remove the network and create it again"
        driver = network.spec.driver or DEFAULT_DRIVER
        if spec.driver != driver:
            problems.append(f"{where}: driver cannot change ({driver} -> {spec.driver}): {tail}")
        if spec.subnet and spec.subnet != network.subnet:
            problems.append(
                f"{where}: subnet cannot change ({network.subnet} -> {spec.subnet}): {tail}"
            )
    return problems


def taken_subnets(view: View, settings: ipam.IpamSettings) -> hosts.Subnets:
    """What a new network's subnet must not overlap: every network's subnet, every host's
    address and the agents' bridge subnets (hosts.py says why), each named."""
    taken = [
        (ipaddress.IPv4Network(n.subnet), f"network {n.spec.name!r}")
        for n in view.objects(Kind.NETWORK)
        if n.subnet
    ]
    return taken + hosts.host_subnets(view, settings.bridge_subnets)


def overlap_problems(
    specs: list[specs_pb2.NetworkSpec], view: View, settings: ipam.IpamSettings
) -> list[str]:
    """Subnets given for new networks that overlap what ``taken_subnets`` names, or a
    subnet given earlier in the same request (any client, not only the CLI's loader)."""
    taken = taken_subnets(view, settings)
    problems = []
    for i, spec in enumerate(specs):
        if not spec.subnet or view.get(Kind.NETWORK, spec.name) is not None:
            continue
        subnet = ipaddress.IPv4Network(spec.subnet)
        problems += [
            f"networks[{i}] ({spec.name}): subnet {subnet} overlaps {what} ({other})"
            for other, what in taken
            if subnet.overlaps(other)
        ]
        taken.append((subnet, f"network {spec.name!r} of this request"))
    return problems


def decide(
    view: View, specs: list[specs_pb2.NetworkSpec], settings: ipam.IpamSettings, now: datetime
) -> Decision:
    """Creates (with VNI, subnet and claims) and label updates for ``specs``, which are
    normalized and validated; ``result`` lists the networks created."""
    decision = Decision(result=[])
    networks = list(view.objects(Kind.NETWORK))
    claims = list(view.objects(Kind.CLAIM))
    vnis = {n.vni for n in networks} | {int(c.value) for c in claims if c.kind == "vni"}
    subnets = [subnet for subnet, _ in taken_subnets(view, settings)]
    subnets += [ipaddress.IPv4Network(c.value) for c in claims if c.kind == "subnet"]
    # Subnets given in this apply are taken before any is cut from the pool.
    subnets += [ipaddress.IPv4Network(s.subnet) for s in specs if s.subnet]
    for i, spec in enumerate(specs):
        current = view.get(Kind.NETWORK, spec.name)
        if current is not None:
            decision += _relabelled(current, spec, now)
            continue
        try:
            vni = ipam.next_vni(vnis, settings)
            subnet = spec.subnet or str(ipam.next_subnet(subnets, settings))
        except ValidationError as exc:
            raise ValidationError(
                [f"networks[{i}] ({spec.name}): {p}" for p in exc.problems]
            ) from exc
        vnis.add(vni)
        if not spec.subnet:
            subnets.append(ipaddress.IPv4Network(subnet))
        network = new_network(spec, vni, subnet, now)
        decision.result.append(network)
        decision.changes.append(change(Kind.NETWORK, None, spec))
        decision.ops += [
            Create(Kind.NETWORK, network),
            Create(Kind.CLAIM, objects_pb2.Claim(kind="vni", value=str(vni), owner=spec.name)),
            Create(Kind.CLAIM, objects_pb2.Claim(kind="subnet", value=subnet, owner=spec.name)),
        ]
    if decision.result:
        decision.ops.append(QuietSince(Kind.NETWORK, view.revision))
    return decision


def _relabelled(current: Versioned, spec: specs_pb2.NetworkSpec, now: datetime) -> Decision:
    """An existing network given again: only its labels may differ (immutable_problems
    refused the rest)."""
    kept = specs_pb2.NetworkSpec()
    kept.CopyFrom(spec)
    kept.subnet = current.obj.spec.subnet  # "" when it came from the pool
    what = change(Kind.NETWORK, current, kept)
    ops = [respecced(current, kept, now)] if what.action == "update" else []
    return Decision(ops, [what])


def new_network(
    spec: specs_pb2.NetworkSpec, vni: int, subnet: str, now: datetime
) -> objects_pb2.Network:
    stamp = model.timestamp(now)
    return objects_pb2.Network(
        id=model.new_id(),
        meta=objects_pb2.Meta(version=1, created_at=stamp, updated_at=stamp),
        spec=spec,
        vni=vni,
        subnet=subnet,
        gateway=ipam.gateway_of(subnet),
    )


def joined_guards(services: list[specs_pb2.ServiceSpec], created: set[str], view: View) -> list[Op]:
    """Guards that the existing networks the services join are still there at commit (a
    concurrent RemoveNetwork would otherwise leave services on a missing network)."""
    names = {n for s in services for n in model.cluster_networks(s) if n not in created}
    guards: list[Op] = []
    for name in sorted(names):
        current = view.get(Kind.NETWORK, name)
        if current is not None:
            guards.append(Unmodified(current.key, current.mod_revision))
    return guards


def users(view: View, name: str) -> list[str]:
    """Names of the services that list network ``name``."""
    return sorted(
        s.spec.name
        for s in view.objects(Kind.SERVICE)
        if any(n.target == name for n in s.spec.networks)
    )


def network_info(view: View, network: objects_pb2.Network) -> control_pb2.NetworkInfo:
    name = network.spec.name
    endpoints = sum(1 for lease in view.objects(Kind.LEASE) if lease.network == name)
    return control_pb2.NetworkInfo(network=network, services=users(view, name), endpoints=endpoints)


def get(view: View, name: str) -> objects_pb2.Network:
    current = view.get(Kind.NETWORK, name)
    if current is None:
        raise NotFoundError(f"no such network: {name}")
    return current.obj


def decide_removal(view: View, name: str) -> Decision:
    """The writes that remove network ``name``, or InUseError saying who uses it."""
    current = view.get(Kind.NETWORK, name)
    if current is None:
        raise NotFoundError(f"no such network: {name}")
    services = users(view, name)
    if services:
        raise InUseError(
            f"network {name} is in use by service{'s' if len(services) > 1 else ''} "
            f"{', '.join(services)}; remove them or take the network out of their specs first"
        )
    holders = [
        t
        for t in view.objects(Kind.TASK)
        if any(n.target == name for n in t.networks) and ipam.holds_addresses(t)
    ]
    if holders:
        owners = ", ".join(sorted({t.service_name for t in holders}))
        raise InUseError(
            f"network {name} is still used by {len(holders)} stopping task"
            f"{'s' if len(holders) > 1 else ''} (of {owners}); try again once they are gone"
        )
    network: objects_pb2.Network = current.obj
    ops: list[Op] = [
        QuietSince(Kind.SERVICE, view.revision),
        Delete(Kind.NETWORK, current.key, current.mod_revision),
    ]
    for claim_name in (f"vni/{network.vni}", f"subnet/{network.subnet}"):
        claim = view.get(Kind.CLAIM, claim_name)
        if claim is not None and claim.obj.owner == name:
            ops.append(Delete(Kind.CLAIM, claim.key, claim.mod_revision))
    return Decision(ops)
