"""Apply: networks and services of one request, decided together and written in ONE
transaction (or not at all). Checks of the request alone come first (``validated``);
the decision then checks the request against the view (immutable networks, overlapping
subnets, unknown networks) and computes the writes: networks.py for networks,
services.py for services.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from orch import model
from orch.errors import ValidationError
from orch.manager.allocator import ipam
from orch.manager.controlapi import hosts, networks, services
from orch.manager.controlapi.decision import Decision, View, duplicates
from orch.manager.state.api import Create, Kind, Update
from orch.manifests.validate import (
    apply_size_problems,
    port_clashes,
    port_text,
    validate_network_spec,
    validate_service_spec,
)
from orch.proto import control_pb2, specs_pb2

NetSpecs = list[specs_pb2.NetworkSpec]
ServiceSpecs = list[specs_pb2.ServiceSpec]


def validated(request: control_pb2.ApplyRequest) -> tuple[NetSpecs, ServiceSpecs]:
    """The request's specs normalized, or ValidationError listing every problem of the
    request itself (one per line), before anything is read or written."""
    nets = [networks.normalize(s) for s in request.networks]
    specs = [services.normalize(s) for s in request.services]
    problems = apply_size_problems([*nets, *specs])
    for i, spec in enumerate(nets):
        problems += [f"networks[{i}] ({spec.name}): {p}" for p in validate_network_spec(spec)]
    for i, spec in enumerate(specs):
        problems += [f"services[{i}] ({spec.name}): {p}" for p in validate_service_spec(spec)]
    problems += duplicates("network", [s.name for s in nets])
    problems += duplicates("service", [s.name for s in specs])
    for index, earlier, key in port_clashes(specs):
        problems.append(
            f"services[{index}] ({specs[index].name}): published port {port_text(key)} "
            f"is also published by service {specs[earlier].name!r} in this apply"
        )
    if problems:
        raise ValidationError(problems)
    return nets, specs


def decide(
    view: View,
    nets: NetSpecs,
    specs: ServiceSpecs,
    settings: ipam.IpamSettings,
    now: datetime,
    reserved_ports: Collection[int] = (),
) -> Decision:
    """The writes of an Apply over the view as it is now; ``reserved_ports`` are host
    ports no service may publish (besides the managers' own, hosts.py)."""
    problems = networks.immutable_problems(nets, view)
    problems += networks.overlap_problems(nets, view, settings)
    problems += hosts.port_problems(view, specs, reserved_ports)
    problems += unknown_networks(view, nets, specs)
    if problems:
        raise ValidationError(problems)
    made = networks.decide(view, nets, settings, now)
    decision = Decision(list(made.ops), list(made.changes))
    decision += services.decide_specs(view, specs, now)
    if any(isinstance(op, Create | Update) for op in decision.ops):
        created = {n.spec.name for n in made.result}
        decision.ops += networks.joined_guards(specs, created, view)
    return decision


def unknown_networks(view: View, nets: NetSpecs, specs: ServiceSpecs) -> list[str]:
    """Networks the services join that neither exist nor come with this apply."""
    known = {n.name for n in nets} | {v.obj.spec.name for v in view.items(Kind.NETWORK)}
    problems = []
    for i, spec in enumerate(specs):
        for j, net in enumerate(spec.networks):
            if net.target not in model.BUILTIN_NETWORKS and net.target not in known:
                problems.append(
                    f"services[{i}] ({spec.name}): networks[{j}]: no network named "
                    f"{net.target!r} (accepted: {', '.join(model.BUILTIN_NETWORKS)}, or a "
                    "network in this apply or already created)"
                )
    return problems
