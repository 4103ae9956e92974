"""The scheduler's filters, ranking and explanations (unit tests), and its invariants over
random clusters (hypothesis)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, note, settings
from hypothesis import strategies as st

from orch.manager.scheduler.core import (
    NodeInfo,
    SchedulerSettings,
    format_bytes,
    format_cpus,
    pipeline,
    schedule,
)
from orch.proto import objects_pb2
from orch.proto import types_pb2 as T

from .harness import GiB, Harness, MiB


def placed(h: Harness) -> Counter[str]:
    return Counter(t.node_id for t in h.tasks.values() if t.node_id and h.is_live(t))


def test_five_replicas_on_three_nodes_spread_2_2_1() -> None:
    h = Harness()
    for n in ("n1", "n2", "n3"):
        h.node(n)
    h.service("web", replicas=5)
    h.step()
    decisions = h.place()
    assert [d.node_id for d in decisions] == ["n1", "n2", "n3", "n1", "n2"]
    assert sorted(placed(h).values()) == [1, 2, 2]
    assert decisions[0].reason == "least loaded: 0 of web and 0 tasks on n1"


def test_spread_per_service_before_total_load() -> None:
    h = Harness()
    h.node("n1")
    h.node("n2")
    h.service("db", replicas=3)
    h.add_task("db", 1, node="n1", state=T.RUNNING)
    h.add_task("db", 2, node="n1", state=T.RUNNING)
    h.add_task("db", 3, node="n1", state=T.RUNNING)
    h.service("web", replicas=1)
    h.service("api", replicas=1)
    h.add_task("api", 1, node="n2", state=T.RUNNING)
    h.add_task("web", 1, state=T.PENDING, task_id="w")
    h.add_task("web", 2, state=T.PENDING, task_id="w2")
    # n2 has fewer tasks in total; the two web tasks still spread one per node.
    assert [(d.task_id, d.node_id) for d in h.schedule()] == [("w", "n2"), ("w2", "n1")]


def test_ties_go_to_the_lowest_node_id_and_results_are_deterministic() -> None:
    h = Harness()
    for n in ("c", "a", "b"):
        h.node(n)
    h.service("web", replicas=1)
    h.step()
    assert h.schedule()[0].node_id == "a"
    assert h.schedule() == h.schedule()


def test_only_ready_active_nodes_take_tasks() -> None:
    h = Harness()
    h.node("down", status=T.NODE_DOWN)
    h.node("disc", status=T.NODE_DISCONNECTED)
    h.node("unknown", status=T.NODE_STATUS_UNSPECIFIED)
    h.node("paused", availability=T.PAUSE)
    h.node("drained", availability=T.DRAIN)
    h.node("ok", availability=T.AVAILABILITY_UNSPECIFIED)
    h.service("web", replicas=3)
    h.step()
    assert {d.node_id for d in h.schedule()} == {"ok"}


def test_no_node_reason_counts_each_failure_in_pipeline_order() -> None:
    h = Harness()
    h.node("n1", status=T.NODE_DOWN)
    h.node("n2", memory=256 * MiB)
    h.node("n3", memory=128 * MiB)
    h.service("web", memory=512 * MiB)
    h.step()
    (d,) = h.schedule()
    assert d.node_id is None
    assert d.reason == (
        "no suitable node (3 nodes): 1 down, 2 insufficient memory (need 512MiB, max free 256MiB)"
    )


def test_no_node_reason_for_every_filter() -> None:
    h = Harness(scheduler=SchedulerSettings(max_tasks_per_node=1))
    h.node("a", status=T.NODE_DISCONNECTED)
    h.node("b", availability=T.PAUSE)
    h.node("c", availability=T.DRAIN)
    h.node("d", cpus=0.25)
    h.node("e")
    h.service("other")
    h.add_task("other", 1, node="e")
    h.service("web", cpus=0.5)
    h.step()
    (d,) = h.schedule()
    assert d.reason == (
        "no suitable node (5 nodes): 1 disconnected, 1 paused, 1 draining,"
        " 1 insufficient cpu (need 0.5 CPUs, max free 0.25 CPUs), 1 full (max 1 task)"
    )


def test_no_nodes_at_all() -> None:
    h = Harness()
    h.service("web")
    h.step()
    assert h.schedule()[0].reason == "no suitable node (0 nodes)"
    h.node("n1", status=T.NODE_DOWN)
    assert h.schedule()[0].reason == "no suitable node (1 node): 1 down"


def test_reservations_of_running_tasks_and_of_this_call_are_subtracted() -> None:
    h = Harness()
    h.node("n1", cpus=2, memory=1 * GiB)
    h.service("db", memory=600 * MiB, cpus=1)
    h.add_task("db", 1, node="n1")
    h.service("web", replicas=3, memory=200 * MiB, cpus=0.25)
    h.step()
    decisions = h.schedule()
    assert [d.node_id for d in decisions] == ["n1", "n1", None]
    assert decisions[2].reason.endswith("(need 200MiB, max free 24MiB)")


def test_terminal_tasks_free_their_reservations() -> None:
    h = Harness()
    h.node("n1", memory=1 * GiB)
    h.service("db", memory=1 * GiB)
    h.add_task("db", 1, node="n1", state=T.FAILED, desired=T.SHUTDOWN)
    h.add_task("db", 1, task_id="next", state=T.PENDING)
    assert [d.node_id for d in h.schedule()] == ["n1"]


def test_stopping_tasks_still_hold_their_reservations() -> None:
    h = Harness()
    h.node("n1", memory=1 * GiB)
    h.service("db", memory=1 * GiB)
    h.add_task("db", 1, node="n1", state=T.RUNNING, desired=T.SHUTDOWN)
    h.add_task("db", 1, task_id="next", state=T.PENDING)
    assert h.schedule()[0].node_id is None


def test_tasks_not_waiting_for_a_node_get_no_decision() -> None:
    h = Harness()
    h.node("n1")
    h.service("web")
    on_node = h.add_task("web", 1, node="n1", state=T.ASSIGNED)
    stopping = h.add_task("web", 2, state=T.NEW, desired=T.SHUTDOWN)
    waiting = h.add_task("web", 3, state=T.PENDING)
    decisions = schedule([on_node, stopping, waiting], list(h.nodes.values()), [on_node])
    assert [d.task_id for d in decisions] == [waiting.id]


def test_pipeline_includes_the_task_limit_only_when_set() -> None:
    assert len(pipeline(SchedulerSettings())) == 7
    assert len(pipeline(SchedulerSettings(max_tasks_per_node=3))) == 8


def test_formatting() -> None:
    assert format_bytes(512 * MiB) == "512MiB"
    assert format_bytes(3 * GiB // 2) == "1.5GiB"
    assert format_bytes(300) == "300B"
    assert format_bytes(0) == "0B"
    assert format_cpus(500_000_000) == "0.5 CPUs"
    assert format_cpus(1_000_000_000) == "1 CPU"


# -- properties --------------------------------------------------------------------------

STATUSES = [T.NODE_READY, T.NODE_READY, T.NODE_DOWN, T.NODE_DISCONNECTED]
AVAILABILITIES = [T.ACTIVE, T.ACTIVE, T.AVAILABILITY_UNSPECIFIED, T.PAUSE, T.DRAIN]


@st.composite
def clusters(draw: st.DrawFn) -> Harness:
    limit = draw(st.sampled_from([0, 0, 3]))
    h = Harness(scheduler=SchedulerSettings(max_tasks_per_node=limit))
    for i in range(draw(st.integers(0, 5))):
        h.node(
            f"n{i}",
            status=draw(st.sampled_from(STATUSES)),
            availability=draw(st.sampled_from(AVAILABILITIES)),
            cpus=draw(st.sampled_from([0, 1, 2, 4])),
            memory=draw(st.sampled_from([0, 512, 1024, 4096])) * MiB,
        )
    for name in ("a", "b", "c"):
        h.service(
            name,
            replicas=draw(st.integers(0, 6)),
            cpus=draw(st.sampled_from([0, 0.25, 1])),
            memory=draw(st.sampled_from([0, 128, 700])) * MiB,
        )
    nodes = list(h.nodes)
    for i in range(draw(st.integers(0, 8)) if nodes else 0):
        h.add_task(
            draw(st.sampled_from(["a", "b", "c"])),
            1,
            node=draw(st.sampled_from(nodes)),
            state=draw(st.sampled_from([T.ASSIGNED, T.RUNNING, T.FAILED, T.SHUTDOWN])),
            task_id=f"old{i}",
        )
    h.step()  # unassigned tasks for every slot of every service
    h.allocate()  # ... waiting for a node
    return h


def free(h: Harness) -> dict[str, NodeInfo]:
    infos = {n.id: NodeInfo.of(n) for n in h.nodes.values()}
    for t in h.tasks.values():
        if t.node_id in infos and t.status.state < T.COMPLETE:
            infos[t.node_id].add(t)
    return infos


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_placements_fit_and_failures_are_true(h: Harness) -> None:
    note(repr(h))
    waiting = h.waiting()
    decisions = h.schedule()
    assert [d.task_id for d in decisions] == [t.id for t in waiting]
    filters = pipeline(h.scheduler_settings)
    for d, task in zip(decisions, waiting, strict=True):
        infos = free(h)  # the state as it was before this task, placements so far included
        fitting = [i.id for i in infos.values() if all(f.check(i, task) is None for f in filters)]
        if d.node_id is None:
            assert fitting == [], f"{task.id} unplaced but {fitting} fit"
            assert d.reason.startswith(f"no suitable node ({len(h.nodes)} node")
        else:
            assert d.node_id in fitting
            node = h.nodes[d.node_id]
            assert node.status.state == T.NODE_READY
            assert node.spec.availability in (T.ACTIVE, T.AVAILABILITY_UNSPECIFIED)
            h.apply_decisions([d])
    new = {d.task_id for d in decisions if d.node_id}
    for node in h.nodes.values():  # placements never overcommit a node (checked by hand)
        held = [t for t in h.tasks.values() if t.node_id == node.id and t.status.state < T.COMPLETE]
        if not any(t.id in new for t in held):
            continue
        old = [t for t in held if t.id not in new]
        for field in ("nano_cpus", "memory_bytes"):
            capacity = getattr(node.description.resources, field)
            used = sum(getattr(t.resources.reservations, field) for t in held)
            used_before = sum(getattr(t.resources.reservations, field) for t in old)
            assert used <= max(capacity, used_before), f"{node.id} {field} overcommitted"
            if used_before > capacity:  # already over: only zero reservations may join
                assert used == used_before


@settings(max_examples=200, deadline=None)
@given(replicas=st.integers(1, 30), nodes=st.integers(1, 6), services=st.integers(1, 3))
def test_spread_is_even_on_equal_empty_nodes(replicas: int, nodes: int, services: int) -> None:
    h = Harness()
    for i in range(nodes):
        h.node(f"n{i}")
    for s in range(services):
        h.service(f"s{s}", replicas=replicas)
    h.step()
    h.place()
    for s in range(services):
        per_node = Counter(t.node_id for t in h.tasks.values() if t.service_id == f"s{s}")
        counts = [per_node.get(f"n{i}", 0) for i in range(nodes)]
        assert max(counts) - min(counts) <= 1, counts
    totals = [len(h.running_on(f"n{i}")) for i in range(nodes)]
    assert max(totals) - min(totals) <= services


@settings(max_examples=100, deadline=None)
@given(clusters())
def test_schedule_does_not_mutate_its_inputs(h: Harness) -> None:
    before = {
        k: objects_pb2.Task.SerializeToString(v, deterministic=True) for k, v in h.tasks.items()
    }
    nodes_before = [n.SerializeToString(deterministic=True) for n in h.nodes.values()]
    h.schedule()
    assert before == {k: v.SerializeToString(deterministic=True) for k, v in h.tasks.items()}
    assert nodes_before == [n.SerializeToString(deterministic=True) for n in h.nodes.values()]


# -- published ports ----------------------------------------------------------------------


def test_replicas_publishing_a_fixed_port_spread_one_per_node_and_the_rest_wait() -> None:
    h = Harness()
    h.node("n1")
    h.node("n2")
    h.service("web", replicas=3, ports=["8080:80"])
    h.step()
    decisions = h.place()
    assert sorted(d.node_id or "" for d in decisions) == ["", "n1", "n2"]
    waiting = next(d for d in decisions if d.node_id is None)
    assert waiting.reason == "no suitable node (2 nodes): 2 with port 8080/tcp taken"


def test_a_port_taken_by_another_service_keeps_a_task_off_that_node_only() -> None:
    h = Harness()
    h.node("n1")
    h.node("n2")
    h.service("other", ports=["8080:80"])
    h.add_task("other", 1, node="n1", state=T.RUNNING)
    h.service("web", ports=["8080:8080"])
    h.add_task("web", 1, state=T.PENDING, task_id="w")
    assert [(d.task_id, d.node_id) for d in h.schedule()] == [("w", "n2")]


def test_same_port_other_protocol_or_ended_task_does_not_block() -> None:
    h = Harness()
    h.node("n1")
    h.service("dns-udp", ports=["53:53/udp"])
    h.add_task("dns-udp", 1, node="n1", state=T.RUNNING)
    h.service("old", ports=["53:53"])
    h.add_task("old", 1, node="n1", state=T.FAILED)
    h.service("dns-tcp", ports=["53:53"])
    h.add_task("dns-tcp", 1, state=T.PENDING, task_id="t")
    assert [(d.task_id, d.node_id) for d in h.schedule()] == [("t", "n1")]


def test_a_stopping_task_still_holds_its_port() -> None:
    h = Harness()
    h.node("n1")
    h.service("web", ports=["8080:80"])
    h.add_task("web", 1, node="n1", state=T.RUNNING, desired=T.SHUTDOWN)
    h.add_task("web", 1, state=T.PENDING, task_id="new")
    [decision] = h.schedule()
    assert decision.node_id is None
    assert decision.reason == "no suitable node (1 node): 1 with port 8080/tcp taken"
