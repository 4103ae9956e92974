"""The simulator: the real leader loops over an in-memory store on fake time, and the
dry-run plan it gives an Apply (pure, in memory, milliseconds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orch.manager import simulator
from orch.manager.allocator.ipam import IpamSettings
from orch.manager.controlapi import apply
from orch.manager.controlapi.decision import Decision, View
from orch.manager.simulator import Simulator, SimulatorSettings
from orch.manager.state.api import Create, Kind, Update
from orch.manifests.loader import load_paths
from orch.proto import control_pb2, objects_pb2, specs_pb2
from orch.proto import types_pb2 as T

T0 = datetime(2026, 1, 1, tzinfo=UTC)
APP = Path(__file__).parents[2] / "manifests" / "examples" / "app.yaml"


def node(name: str, **labels: str) -> objects_pb2.Node:
    n = objects_pb2.Node(id=f"id-{name}")
    n.description.hostname = name
    n.description.resources.nano_cpus = 2 * 10**9
    n.description.resources.memory_bytes = 1 << 30
    n.spec.availability = T.ACTIVE
    n.spec.labels.update(labels)
    n.status.state = T.NODE_READY
    return n


def service(name: str, replicas: int = 1, image: str = "busybox") -> specs_pb2.ServiceSpec:
    spec = specs_pb2.ServiceSpec(name=name, replicas=replicas)
    spec.container.image = image
    return spec


async def plan(view: View, decide) -> list[control_pb2.PlannedTask]:
    """The tasks of a complete dry run."""
    result = await simulator.dry_run(view, decide, T0)
    assert result.note == ""
    return result.tasks


def deciding(request: control_pb2.ApplyRequest):
    nets, specs = apply.validated(request)

    def decide(view: View) -> Decision:
        return apply.decide(view, nets, specs, IpamSettings(), T0)

    return decide


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(T0) as running:
        yield running


async def cluster(sim: Simulator, *specs: specs_pb2.ServiceSpec, nodes: int = 3) -> Simulator:
    """``sim`` settled with ``nodes`` nodes running ``specs``."""
    await sim.write([Create(Kind.NODE, node(f"h{i}")) for i in range(1, nodes + 1)])
    decision = deciding(control_pb2.ApplyRequest(services=specs))(sim.view)
    await sim.write(decision.ops)
    assert await sim.settle()
    return sim


async def test_an_example_app_starts_on_three_nodes_with_addresses(sim: Simulator) -> None:
    manifest = load_paths([APP])
    await cluster(sim)
    request = control_pb2.ApplyRequest(networks=manifest.networks, services=manifest.services)
    planned = await plan(sim.view, deciding(request))
    assert [(p.service, p.slot, p.action) for p in planned] == [
        ("api", 1, "start"),
        ("api", 2, "start"),
        ("api", 3, "start"),
        ("client", 1, "start"),
    ]
    assert {p.node for p in planned if p.service == "api"} == {"h1", "h2", "h3"}
    assert sim.tasks() == []  # the source is a copy: nothing happened to it


async def test_the_simulated_tasks_run_with_addresses_on_the_overlay(sim: Simulator) -> None:
    manifest = load_paths([APP])
    await cluster(sim)
    request = control_pb2.ApplyRequest(networks=manifest.networks, services=manifest.services)
    await sim.write(deciding(request)(sim.view).ops)
    assert await sim.settle()
    tasks = sim.tasks()
    assert {t.status.state for t in tasks} == {T.RUNNING}
    assert {t.status.health for t in tasks if t.service_name == "api"} == {T.HEALTH_HEALTHY}
    addresses = [ip for t in tasks for a in t.attachments for ip in a.addresses]
    assert len(addresses) == 4 and len(set(addresses)) == 4
    assert len(list(sim.view.objects(Kind.LEASE))) == 4


async def test_an_unplaceable_service_stays_pending_with_the_reason(sim: Simulator) -> None:
    await cluster(sim)
    spec = service("db", replicas=2)
    spec.placement.constraints.append("node.labels.zone==c")
    planned = await plan(sim.view, deciding(control_pb2.ApplyRequest(services=[spec])))
    assert [(p.slot, p.node, p.action) for p in planned] == [(1, "", "pending"), (2, "", "pending")]
    assert planned[0].reason == (
        "no suitable node (3 nodes): 3 not matching constraint node.labels.zone==c"
    )


async def test_scale_down_keeps_some_and_stops_the_rest(sim: Simulator) -> None:
    await cluster(sim, service("web", replicas=3))
    planned = await plan(sim.view, deciding(control_pb2.ApplyRequest(services=[service("web", 1)])))
    assert [(p.slot, p.action) for p in planned] == [(1, "keep"), (2, "stop"), (3, "stop")]
    assert {p.node for p in planned} == {"h1", "h2", "h3"}


async def test_a_rolling_update_replaces_every_task_over_fake_time(sim: Simulator) -> None:
    spec = service("web", replicas=2)
    spec.update.delay.FromSeconds(30)  # between batches: the simulator jumps over it
    await cluster(sim, spec)
    old = {t.id for t in sim.tasks()}
    changed = service("web", 2, image="busybox:2")
    changed.update.delay.FromSeconds(30)
    planned = await plan(sim.view, deciding(control_pb2.ApplyRequest(services=[changed])))
    assert [(p.slot, p.action) for p in planned] == [
        (1, "stop"),
        (1, "start"),
        (2, "stop"),
        (2, "start"),
    ]
    assert {p.task_id for p in planned if p.action == "stop"} == old


async def test_an_unchanged_apply_keeps_everything(sim: Simulator) -> None:
    await cluster(sim, service("web", replicas=2))
    planned = await plan(sim.view, deciding(control_pb2.ApplyRequest(services=[service("web", 2)])))
    assert [p.action for p in planned] == ["keep", "keep"]


async def test_a_dry_run_too_large_to_simulate_says_so(sim: Simulator) -> None:
    await cluster(sim, service("web", replicas=3))
    settings = SimulatorSettings(max_tasks=10)
    big = deciding(control_pb2.ApplyRequest(services=[service("api", 8)]))
    result = await simulator.dry_run(sim.view, big, T0, settings)
    assert result.tasks == []
    assert result.note == (
        "tasks not simulated: the cluster would hold about 11 tasks, a dry run simulates at most 10"
    )


async def test_settle_stops_at_the_horizon() -> None:
    """A wake-up beyond the horizon (a restart delay) is not waited for; one within it
    is, on fake time."""
    async with Simulator(T0, SimulatorSettings(horizon=timedelta(seconds=30))) as sim:
        await cluster(sim, nodes=1)
        spec = service("job")
        spec.restart_policy.condition = T.RESTART_ON_FAILURE
        spec.restart_policy.delay.FromSeconds(60)
        await sim.write(deciding(control_pb2.ApplyRequest(services=[spec]))(sim.view).ops)
        assert await sim.settle()
        (current,) = sim.view.items(Kind.TASK)
        failed = objects_pb2.Task()
        failed.CopyFrom(current.obj)
        failed.status.state = T.FAILED
        await sim.write([Update(Kind.TASK, failed, current.mod_revision)])
        assert await sim.settle()
        assert sim.now == T0  # the restart is 60 s away: not simulated
        assert [t.status.state for t in sim.tasks()] == [T.FAILED]
        sim.advance(40)  # now the restart is due within the horizon
        assert await sim.settle()
        assert sim.now == T0 + timedelta(seconds=60)
        assert sorted(t.status.state for t in sim.tasks()) == [T.RUNNING, T.FAILED]


def test_task_plan_compares_the_live_tasks_before_and_after() -> None:
    def task(tid: str, slot: int, node_id: str = "", desired: int = T.RUNNING) -> objects_pb2.Task:
        t = objects_pb2.Task(id=tid, service_name="web", slot=slot, node_id=node_id)
        t.desired_state = desired
        t.status.state = T.RUNNING if node_id else T.PENDING
        t.status.err = "" if node_id else "no suitable node"
        return t

    before = [task("a", 1, "id-h1"), task("b", 2), task("c", 3), task("d", 4, "id-h2")]
    after = [
        task("a", 1, "id-h1"),  # runs on: keep
        task("b", 2, "id-h2"),  # was waiting, now placed: start
        task("c", 3),  # still waiting: pending, with the reason
        task("d", 4, "id-h2", desired=T.SHUTDOWN),  # stops
        task("e", 5, "id-h1"),  # new and placed: start
        task("x", 1, "id-h1", desired=T.SHUTDOWN),  # new but already superseded: not shown
    ]
    other = objects_pb2.Task(id="o", service_name="db", slot=1, node_id="id-h1")
    planned = simulator.task_plan(
        before, [*after, other], [node("h1"), node("h2")], services={"web"}
    )
    assert [(p.task_id, p.slot, p.node, p.action, p.reason) for p in planned] == [
        ("a", 1, "h1", "keep", ""),
        ("b", 2, "h2", "start", ""),
        ("c", 3, "", "pending", "no suitable node"),
        ("d", 4, "h2", "stop", ""),
        ("e", 5, "h1", "start", ""),
    ]
