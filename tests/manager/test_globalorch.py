"""The global-service orchestrator on in-memory state: one task per eligible node,
following nodes as they join, leave, drain, pause, go down and change labels; and the
scheduler placing each task on its own node or saying why it cannot (hypothesis for the
invariant over random node lives)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from hypothesis import given, note, settings
from hypothesis import strategies as st

from orch import model
from orch.manager.orchestrator.global_mode import GLOBAL_SLOT, eligible_nodes
from orch.proto import specs_pb2
from orch.proto import types_pb2 as T

from .harness import Harness, MiB, restart_policy

GLOBAL = specs_pb2.GLOBAL


def cluster(*node_ids: str, **kw) -> Harness:
    h = Harness()
    for n in node_ids:
        h.node(n)
    h.service("agent", mode=GLOBAL, **kw)
    return h


def live_per_node(h: Harness, service: str = "agent") -> Counter[str]:
    return Counter(
        t.target_node for t in h.tasks.values() if t.service_id == service and h.is_live(t)
    )


def test_one_task_per_node_each_placed_on_its_own_node() -> None:
    h = cluster("n1", "n2", "n3")
    plan = h.step()
    assert sorted(t.target_node for t in plan.create) == ["n1", "n2", "n3"]
    assert {t.slot for t in plan.create} == {GLOBAL_SLOT}
    decisions = h.place()
    assert {h.tasks[d.task_id].target_node: d.node_id for d in decisions} == {
        "n1": "n1",
        "n2": "n2",
        "n3": "n3",
    }
    assert decisions[0].reason.startswith("its node: 0 of agent")
    h.converge()
    assert h.step().empty
    assert all(t.node_id == t.target_node for t in h.tasks.values())


def test_replicas_do_not_matter() -> None:
    h = cluster("n1", "n2", replicas=5)
    h.converge()
    assert live_per_node(h) == {"n1": 1, "n2": 1}


def test_a_drained_node_loses_its_task_which_is_not_replaced_elsewhere() -> None:
    h = cluster("n1", "n2", "n3")
    h.converge()
    on_n2 = next(t for t in h.tasks.values() if t.target_node == "n2")
    h.set_node("n2", availability=T.DRAIN)
    plan = h.step()
    assert plan.create == []
    assert [(t.id, t.desired_state) for t in plan.update] == [(on_n2.id, T.SHUTDOWN)]
    h.converge()
    assert live_per_node(h) == {"n1": 1, "n3": 1}
    assert not any(t.target_node == "n2" for t in h.tasks.values())  # stopped, then deleted
    h.set_node("n2", availability=T.ACTIVE)
    h.converge()
    assert live_per_node(h) == {"n1": 1, "n2": 1, "n3": 1}


def test_a_new_spec_starts_on_a_node_once_its_old_task_stopped() -> None:
    # The slot rule of replicated services: stop-first waits for the outdated task.
    h = cluster("n1")
    h.converge()
    h.set_node("n1", availability=T.DRAIN)
    h.step()  # shut down; the agent has not stopped it yet
    h.update_service("agent", image="agent:v2")
    h.set_node("n1", availability=T.ACTIVE)
    assert h.step().empty
    h.agent_tick()
    (new,) = h.step().create
    assert new.target_node == "n1" and new.container.image == "agent:v2"


def test_a_paused_node_keeps_its_task_but_gets_no_new_one() -> None:
    h = cluster("n1", "n2")
    h.converge()
    h.set_node("n2", availability=T.PAUSE)
    assert h.step().empty
    on_n2 = next(t for t in h.tasks.values() if t.target_node == "n2")
    h.fail(on_n2.id)
    h.advance(60)
    assert h.step().empty  # not restarted while paused
    h.set_node("n2", availability=T.ACTIVE)
    plan = h.step()
    assert [t.target_node for t in plan.create] == ["n2"]


def test_a_node_that_goes_down_is_not_replaced_elsewhere_and_gets_a_task_when_back() -> None:
    h = cluster("n1", "n2")
    h.converge()
    on_n2 = next(t for t in h.tasks.values() if t.target_node == "n2")
    h.set_node("n2", status=T.NODE_DOWN)
    assert h.step().empty
    h.report(on_n2.id, T.ORPHANED)  # what the node monitor does
    assert h.step().empty
    h.set_node("n2", status=T.NODE_READY)
    plan = h.step()
    assert [t.target_node for t in plan.create] == ["n2"]
    assert plan.create[0].status.message == f"replaces {on_n2.id}"
    assert [t.id for t in plan.update] == [on_n2.id]  # the old one told to stay stopped
    h.converge()
    assert live_per_node(h) == {"n1": 1, "n2": 1}


def test_a_removed_node_loses_its_tasks_and_a_node_that_joins_gets_one() -> None:
    h = cluster("n1", "n2")
    h.converge()
    h.set_node("n2", status=T.NODE_DOWN)
    del h.nodes["n2"]  # orch node rm
    plan = h.step()
    assert len(plan.delete) == 1 and plan.create == []
    h.node("n3")
    h.node("n2")  # registers again
    h.converge()
    assert live_per_node(h) == {"n1": 1, "n2": 1, "n3": 1}


def test_constraints_follow_label_changes() -> None:
    h = cluster("n1", "n2", "n3", constraints=["node.labels.edge==true"])
    h.nodes["n1"].spec.labels["edge"] = "true"
    h.converge()
    assert live_per_node(h) == {"n1": 1}
    h.nodes["n2"].spec.labels["edge"] = "TRUE"  # values compare case-insensitively
    h.converge()
    assert live_per_node(h) == {"n1": 1, "n2": 1}
    del h.nodes["n1"].spec.labels["edge"]
    h.converge()
    assert live_per_node(h) == {"n2": 1}
    assert eligible_nodes(h.services["agent"], list(h.nodes.values())) == ["n2"]


def test_changed_constraints_in_the_spec_apply_to_running_tasks() -> None:
    h = cluster("n1", "n2")
    h.converge()
    h.services["agent"].spec.placement.constraints.append("node.hostname!=n1")
    h.update_service("agent")
    h.converge()
    assert live_per_node(h) == {"n2": 1}


def test_a_failed_task_restarts_on_its_node_after_the_delay() -> None:
    h = cluster("n1", "n2", policy=restart_policy(delay=5))
    h.converge()
    on_n1 = next(t for t in h.tasks.values() if t.target_node == "n1")
    h.fail(on_n1.id)
    plan = h.step()
    assert plan.create == []
    assert plan.wake_at == h.now + timedelta(seconds=5)
    h.advance(5)
    plan = h.step()
    assert [(t.target_node, t.restart_count) for t in plan.create] == [("n1", 1)]


def test_restart_condition_none_leaves_the_node_without_a_task() -> None:
    h = cluster("n1", policy=restart_policy(T.RESTART_NONE))
    h.converge()
    (task,) = h.tasks.values()
    h.complete(task.id)
    h.advance(60)
    assert h.step().empty


def test_tasks_of_a_formerly_replicated_service_are_cleared() -> None:
    h = Harness()
    h.node("n1")
    h.node("n2")
    h.service("web", replicas=3)
    h.converge()
    h.services["web"].spec.mode = GLOBAL
    h.update_service("web")
    h.converge()
    tasks = [t for t in h.tasks.values() if h.is_live(t)]
    assert sorted(t.target_node for t in tasks) == ["n1", "n2"]
    assert all(t.slot == GLOBAL_SLOT for t in tasks)


def test_its_node_unable_to_take_it_is_the_pending_reason() -> None:
    h = Harness()
    h.node("n1", memory=256 * MiB)
    h.node("n2")
    h.service("agent", mode=GLOBAL, memory=512 * MiB)
    h.step()
    decisions = {h.tasks[d.task_id].target_node: d for d in h.place()}
    assert decisions["n2"].node_id == "n2"
    assert decisions["n1"].node_id is None
    assert decisions["n1"].reason == (
        "node n1 cannot take it: insufficient memory (need 512MiB, max free 256MiB)"
    )


def test_a_task_for_a_node_that_is_gone_waits_with_a_reason() -> None:
    h = cluster("n1")
    h.step()
    del h.nodes["n1"]
    (d,) = h.schedule()
    assert d.reason == "its node n1 is not known"


# -- property: a random life of the nodes ------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["drain", "pause", "activate", "down", "up", "rm", "join", "label", "unlabel",
                         "fail"]),
        st.integers(0, 3),
    ),
    max_size=12,
)  # fmt: skip


@settings(max_examples=150, derandomize=True, deadline=None)  # not flaky: same examples
@given(events=EVENTS, constrained=st.booleans())
def test_one_live_task_on_every_eligible_node_and_none_elsewhere(
    events: list[tuple[str, int]], constrained: bool
) -> None:
    h = Harness()
    for i in range(3):
        h.node(f"n{i}", labels={"role": "edge"} if i != 1 else {})
    constraints = ["node.labels.role==edge"] if constrained else []
    h.service("agent", mode=GLOBAL, constraints=constraints, policy=restart_policy(delay=0))
    h.converge_here()
    for event, i in events:
        node_id = f"n{i}"
        node = h.nodes.get(node_id)
        if event == "join":
            if node is None:
                h.node(node_id, labels={"role": "edge"})
        elif node is None:
            continue
        elif event in ("drain", "pause", "activate"):
            h.set_node(
                node_id, availability={"drain": T.DRAIN, "pause": T.PAUSE}.get(event, T.ACTIVE)
            )
        elif event == "down":
            h.set_node(node_id, status=T.NODE_DOWN)
            for t in h.tasks.values():
                if t.node_id == node_id and t.status.state < T.COMPLETE:
                    h.report(t.id, T.ORPHANED)
        elif event == "up":
            h.set_node(node_id, status=T.NODE_READY)
        elif event == "rm" and node.status.state == T.NODE_DOWN:
            del h.nodes[node_id]
        elif event == "label":
            node.spec.labels["role"] = "edge"
        elif event == "unlabel":
            node.spec.labels.pop("role", None)
        elif event == "fail":
            for t in h.tasks.values():
                if t.node_id == node_id and t.status.state == T.RUNNING:
                    h.fail(t.id)
        h.converge_here()
        note(repr(h))
        for n in h.nodes.values():
            # Live in the model's sense (h.is_live never counts a task on a drained node).
            on_node = [t for t in h.tasks.values() if t.target_node == n.id and model.is_live(t)]
            eligible = (
                n.status.state == T.NODE_READY
                and n.spec.availability == T.ACTIVE
                and (not constrained or n.spec.labels.get("role") == "edge")
            )
            if eligible:
                assert len(on_node) == 1, f"{n.id}: {on_node}"
            elif n.spec.availability == T.DRAIN or (
                constrained and n.spec.labels.get("role") != "edge"
            ):
                assert on_node == [], f"{n.id}: {on_node}"
            else:  # paused or down: whatever ran stays, nothing new
                assert len(on_node) <= 1
        for t in h.tasks.values():
            assert not t.node_id or t.node_id == t.target_node
            if t.target_node not in h.nodes:
                assert t.desired_state != T.RUNNING or t.status.state >= T.COMPLETE
