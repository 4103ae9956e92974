"""The Control API's pure decisions (apply, services, networks, nodes, tasks) over a view
of an in-memory store, and a dry-run Apply through the real Control API that writes
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from orch.errors import NotFoundError, PreconditionError, ValidationError
from orch.manager.allocator.ipam import IpamSettings
from orch.manager.controlapi import apply, networks, nodes, services, tasks
from orch.manager.controlapi.decision import InUseError
from orch.manager.simulator import Simulator
from orch.manager.state.api import Create, Delete, Kind, QuietSince, Unmodified, Update
from orch.manager.state.memstore import MemoryStore
from orch.proto import control_pb2, objects_pb2, specs_pb2
from orch.proto import types_pb2 as T

from .conftest import serve_control_api

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IPAM = IpamSettings()


def spec(name: str, replicas: int = 1, *nets: str, image: str = "busybox") -> specs_pb2.ServiceSpec:
    s = specs_pb2.ServiceSpec(name=name, replicas=replicas)
    s.container.image = image
    for n in nets:
        s.networks.add(target=n)
    return s


def node(name: str, state: int = T.NODE_READY) -> objects_pb2.Node:
    n = objects_pb2.Node(id=f"id-{name}")
    n.description.hostname = name
    n.description.resources.nano_cpus = 2 * 10**9
    n.description.resources.memory_bytes = 1 << 30
    n.status.state = state
    return n


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(T0) as running:
        yield running


async def applied(sim: Simulator, *specs: specs_pb2.ServiceSpec, nets=()) -> None:
    request = control_pb2.ApplyRequest(services=specs, networks=nets)
    n, s = apply.validated(request)
    await sim.write(apply.decide(sim.view, n, s, IPAM, T0).ops)


# -- services ----------------------------------------------------------------------------


async def test_a_new_spec_is_a_create_an_equal_one_nothing(sim: Simulator) -> None:
    decision = services.decide_spec(sim.view, spec("web"), T0)
    [op] = decision.ops
    assert isinstance(op, Create) and op.obj.spec == spec("web")
    assert op.obj.meta.version == 1
    assert [(c.kind, c.name, c.action) for c in decision.changes] == [("service", "web", "create")]
    await sim.write(decision.ops)
    again = services.decide_spec(sim.view, spec("web"), T0)
    assert again.ops == [] and [c.action for c in again.changes] == ["unchanged"]


async def test_a_changed_image_is_a_new_version_with_a_rolling_update(sim: Simulator) -> None:
    await applied(sim, spec("web"))
    decision = services.decide_spec(sim.view, spec("web", image="busybox:2"), T0)
    [op] = decision.ops
    assert isinstance(op, Update)
    assert op.mod_revision == sim.view.get(Kind.SERVICE, "web").mod_revision
    assert op.obj.meta.version == 2 and op.obj.previous_spec.container.image == "busybox"
    assert op.obj.update_status.state  # updating
    assert list(decision.changes[0].fields) == ["container.image"]


async def test_scale_is_all_or_nothing(sim: Simulator) -> None:
    await applied(sim, spec("web"))
    with pytest.raises(NotFoundError, match="no such service: nope"):
        services.decide_scale(
            sim.view, control_pb2.ScaleRequest(replicas={"web": 2, "nope": 1}), T0
        )
    decision = services.decide_scale(sim.view, control_pb2.ScaleRequest(replicas={"web": 4}), T0)
    [op] = decision.ops
    assert op.obj.spec.replicas == 4 and not op.obj.HasField("previous_spec")
    assert list(decision.changes[0].fields) == ["replicas"]


async def test_a_global_service_cannot_be_scaled(sim: Simulator) -> None:
    g = spec("agent")
    g.mode = specs_pb2.GLOBAL
    g.replicas = 0
    await applied(sim, g)
    with pytest.raises(ValidationError, match="is global"):
        services.decide_scale(sim.view, control_pb2.ScaleRequest(replicas={"agent": 2}), T0)


async def test_rollback_needs_a_previous_spec(sim: Simulator) -> None:
    await applied(sim, spec("web"))
    with pytest.raises(PreconditionError, match="no previous spec"):
        services.decide_rollback(sim.view, "web", T0)
    await applied(sim, spec("web", image="busybox:2"))
    [op] = services.decide_rollback(sim.view, "web", T0).ops
    assert op.obj.spec.container.image == "busybox"
    assert op.obj.previous_spec.container.image == "busybox:2"


async def test_removal_is_a_guarded_delete(sim: Simulator) -> None:
    await applied(sim, spec("web"))
    [op] = services.decide_removal(sim.view, "web").ops
    current = sim.view.get(Kind.SERVICE, "web")
    assert op == Delete(Kind.SERVICE, current.key, current.mod_revision)
    with pytest.raises(NotFoundError):
        services.decide_removal(sim.view, "nope")


# -- networks and apply ------------------------------------------------------------------


async def test_a_new_network_gets_vni_subnet_and_claims(sim: Simulator) -> None:
    decision = networks.decide(sim.view, [specs_pb2.NetworkSpec(name="front")], IPAM, T0)
    [network] = decision.result
    assert (network.vni, network.subnet, network.gateway) == (4096, "10.10.0.0/24", "10.10.0.1")
    claims = [op.obj for op in decision.ops if isinstance(op, Create) and op.kind is Kind.CLAIM]
    assert {(c.kind, c.value, c.owner) for c in claims} == {
        ("vni", "4096", "front"),
        ("subnet", "10.10.0.0/24", "front"),
    }
    assert QuietSince(Kind.NETWORK, sim.view.revision) in decision.ops


async def test_a_network_given_again_changes_only_its_labels(sim: Simulator) -> None:
    front = networks.normalize(specs_pb2.NetworkSpec(name="front"))
    await applied(sim, nets=[front])
    assert networks.decide(sim.view, [front], IPAM, T0).ops == []
    relabelled = networks.normalize(specs_pb2.NetworkSpec(name="front", labels={"a": "b"}))
    decision = networks.decide(sim.view, [relabelled], IPAM, T0)
    [op] = decision.ops
    assert isinstance(op, Update) and op.obj.spec.labels == {"a": "b"}
    assert op.obj.subnet == "10.10.0.0/24" and op.obj.meta.version == 2
    assert list(decision.changes[0].fields) == ["labels"]


async def test_a_network_in_use_is_not_removed(sim: Simulator) -> None:
    await applied(sim, spec("web", 1, "front"), nets=[specs_pb2.NetworkSpec(name="front")])
    with pytest.raises(InUseError, match="in use by service web"):
        networks.decide_removal(sim.view, "front")


async def test_apply_refuses_unknown_networks_and_guards_joined_ones(sim: Simulator) -> None:
    with pytest.raises(ValidationError, match="no network named 'back'"):
        apply.decide(sim.view, [], [spec("web", 1, "back")], IPAM, T0)
    await applied(sim, nets=[specs_pb2.NetworkSpec(name="back")])
    decision = apply.decide(sim.view, [], [spec("web", 1, "back")], IPAM, T0)
    back = sim.view.get(Kind.NETWORK, "back")
    assert Unmodified(back.key, back.mod_revision) in decision.ops


def test_apply_validates_the_request_before_reading() -> None:
    request = control_pb2.ApplyRequest(services=[spec("web"), spec("web")])
    with pytest.raises(ValidationError, match="service 'web' is given more than once"):
        apply.validated(request)
    ported = spec("web")
    ported.ports.add(published=80, target=80)
    _, [s] = apply.validated(control_pb2.ApplyRequest(services=[ported]))
    assert (s.ports[0].protocol, s.ports[0].mode) == ("tcp", "host")  # normalized


# -- nodes and tasks ---------------------------------------------------------------------


async def test_node_update_and_removal(sim: Simulator) -> None:
    await sim.write([Create(Kind.NODE, node("h1"))])
    request = control_pb2.UpdateNodeRequest(id="h1", add_labels={"zone": "a"})
    decision = nodes.decide_update(sim.view, request, T0)
    [op] = decision.ops
    assert decision.result.spec.labels == {"zone": "a"} and decision.result.meta.version == 1
    await sim.write([op])
    same = nodes.decide_update(sim.view, request, T0)
    assert same.ops == [] and same.result.spec.labels == {"zone": "a"}
    deny = dict(now=T0, deny_for=timedelta(days=90), lease=7)
    with pytest.raises(InUseError, match="node h1 is ready"):
        nodes.decide_removal(sim.view, control_pb2.RemoveNodeRequest(id="h1"), **deny)
    [delete, denied] = nodes.decide_removal(
        sim.view, control_pb2.RemoveNodeRequest(id="h1", force=True), **deny
    ).ops
    assert isinstance(delete, Delete)
    # The node is denied in the same transaction, on the lease, until its certificates end.
    assert isinstance(denied, Update) and denied.kind is Kind.DENIED and denied.lease == 7
    assert denied.mod_revision == 0  # created only if absent
    assert denied.obj.id == delete.key.rpartition("/")[2] == "id-h1"
    assert denied.obj.expires_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(days=90)


async def test_task_names_resolve_by_prefix_slot_and_service(sim: Simulator) -> None:
    await sim.write([Create(Kind.NODE, node("h1"))])
    await applied(sim, spec("web", 2))
    assert await sim.settle()
    by_slot = {t.slot: t for t in sim.tasks()}
    assert tasks.resolve(sim.view, by_slot[1].id[:20]) == by_slot[1]
    with pytest.raises(NotFoundError):
        tasks.resolve(sim.view, "zzzz-none")
    assert tasks.log_targets(sim.view, "web.2") == [by_slot[2]]
    assert [t.slot for t in tasks.log_targets(sim.view, "web")] == [1, 2]
    with pytest.raises(NotFoundError, match="no task in slot 3"):
        tasks.log_targets(sim.view, "web.3")
    listed = tasks.listing(sim.view, control_pb2.ListTasksRequest(service="web"))
    assert [t.slot for t in listed] == [1, 2]


# -- the Control API's dry run -----------------------------------------------------------


async def test_a_dry_run_apply_plans_tasks_and_writes_nothing() -> None:
    store = MemoryStore()
    await store.commit([Create(Kind.NODE, node(f"h{i}")) for i in (1, 2, 3)])
    bad = spec("db", 2)
    bad.placement.constraints.append("node.labels.zone==c")
    async with serve_control_api(store) as api:
        before = await store.revision()
        response = await api.stub.Apply(
            control_pb2.ApplyRequest(services=[spec("web", 3), bad], dry_run=True)
        )
        assert await store.revision() == before
    assert [(c.name, c.action) for c in response.changes] == [("web", "create"), ("db", "create")]
    planned = [(p.service, p.slot, p.action) for p in response.planned_tasks]
    assert planned == [
        ("db", 1, "pending"),
        ("db", 2, "pending"),
        ("web", 1, "start"),
        ("web", 2, "start"),
        ("web", 3, "start"),
    ]
    assert {p.node for p in response.planned_tasks if p.service == "web"} == {"h1", "h2", "h3"}
    assert "not matching constraint node.labels.zone==c" in response.planned_tasks[0].reason
    assert response.plan_note == ""
