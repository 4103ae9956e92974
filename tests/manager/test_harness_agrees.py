"""The harness and the simulator agree: the same cluster converged both ways holds the
same tasks, in the same slots, on the same nodes. The harness's `converge_here` glues the
loops' own pure functions over dicts (fast, for hypothesis); the simulator runs the loops
themselves over a MemoryStore. A difference here is drift between the two."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest

from orch.manager.orchestrator.plan import OrchestratorSettings
from orch.manager.simulator import Simulator, SimulatorSettings
from orch.manager.state.api import Create, Kind
from orch.proto import specs_pb2
from orch.proto import types_pb2 as T

from .harness import Harness


def summary(tasks) -> list[tuple]:
    return sorted(
        (t.id, t.service_id, t.slot, t.node_id, t.desired_state, t.status.state, t.status.err)
        for t in tasks
    )


async def simulated(h: Harness) -> list[tuple]:
    """``h``'s services, nodes and tasks, settled by the simulator (new task ids go on
    from the harness's last, as the harness's own would)."""
    ids = itertools.count(1 + max((int(t.id[1:]) for t in h.tasks.values()), default=0))
    core = replace(OrchestratorSettings(), new_id=lambda: f"t{next(ids)}")
    async with Simulator(h.now, SimulatorSettings(orchestrator=core)) as sim:
        await sim.write(
            [Create(Kind.NODE, n) for n in h.nodes.values()]
            + [Create(Kind.SERVICE, s) for s in h.services.values()]
            + [Create(Kind.TASK, t) for t in h.tasks.values()]
        )
        assert await sim.settle()
        return summary(sim.tasks())


def spread(h: Harness) -> None:
    for n in ("n1", "n2", "n3"):
        h.node(n)
    h.service("web", replicas=5)
    h.service("db", replicas=2, memory=5 << 30)


def drained_and_down(h: Harness) -> None:
    h.node("n1")
    h.node("n2", availability=T.DRAIN)
    h.node("n3", status=T.NODE_DOWN)
    h.node("n4", labels={"zone": "b"})
    h.service("web", replicas=4, max_per_node=1)
    h.service("api", replicas=2, constraints=["node.labels.zone==b"])


def global_service(h: Harness) -> None:
    h.node("n1", labels={"zone": "a"})
    h.node("n2", labels={"zone": "b"})
    h.node("n3", status=T.NODE_DOWN)
    h.service("agent", mode=specs_pb2.GLOBAL)
    h.service("web", replicas=3, spread=["node.labels.zone"], ports=["8080:80"])


def drain_and_scale_after_a_failure(h: Harness) -> None:
    """A running cluster that then changes: a task fails, a node is drained (start-first
    moves), a service scales down."""
    spread(h)
    h.converge_here()
    h.fail("t3")
    h.advance(60)  # past the restart delay
    h.set_node("n2", availability=T.DRAIN)
    h.update_service("web", replicas=3)


@pytest.mark.parametrize(
    "build", [spread, drained_and_down, global_service, drain_and_scale_after_a_failure]
)
async def test_harness_and_simulator_converge_to_the_same_tasks(
    build: Callable[[Harness], None],
) -> None:
    h = Harness()
    build(h)
    expected = await simulated(h)
    h.converge_here()
    assert summary(h.tasks.values()) == expected
    assert any(row[5] == T.RUNNING for row in expected)
