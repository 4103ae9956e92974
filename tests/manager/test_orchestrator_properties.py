"""Property tests of the orchestrator (Nomad's reconcile_cluster_prop_test in spirit):
random snapshots must give consistent, idempotent plans, and a random life of a cluster
(scaling, failures, nodes going down, time passing) must keep the slot invariants.

They are derandomized: every run tries the same examples, so a test that passes in one
run passes in the next and a failure does not depend on a local example database (which
derandomize turns off). New ground is searched when a strategy or test changes, or on
demand with `pytest --hypothesis-seed=N`, which overrides derandomize; what such a search
finds is pinned with @example."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from orch import model
from orch.manager.orchestrator import updater
from orch.manager.orchestrator.plan import OrchestratorSettings, Plan
from orch.proto import types_pb2 as T

from .harness import T0, Harness, restart_policy

CONDITIONS = [T.RESTART_CONDITION_UNSPECIFIED, T.RESTART_NONE, T.RESTART_ON_FAILURE, T.RESTART_ANY]
NODE_STATES = [T.NODE_READY, T.NODE_DOWN, T.NODE_DISCONNECTED]
OBSERVED = [s for s in range(T.NEW, T.ORPHANED + 1)]
DESIRED = [T.RUNNING, T.RUNNING, T.SHUTDOWN, T.REMOVE]

policies = st.builds(
    restart_policy,
    st.sampled_from(CONDITIONS),
    delay=st.sampled_from([None, 0, 5]),
    max_attempts=st.integers(0, 3),
    window=st.sampled_from([None, 0, 60]),
    max_delay=st.sampled_from([None, 20]),
)


@st.composite
def clusters(draw: st.DrawFn) -> Harness:
    limit = draw(st.integers(0, 3))
    h = Harness(settings=OrchestratorSettings(task_history_limit=limit))
    for i in range(draw(st.integers(0, 3))):
        h.node(
            f"n{i}",
            status=draw(st.sampled_from(NODE_STATES)),
            availability=draw(st.sampled_from([T.ACTIVE, T.ACTIVE, T.PAUSE, T.DRAIN])),
        )
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, min_size=1, max_size=3))
    for name in names:
        h.service(name, replicas=draw(st.integers(0, 4)), policy=draw(policies))
        if draw(st.booleans()):
            h.update_service(name)
    # Mostly known nodes: unplaced tasks and vanished nodes are the rarer cases.
    node_ids = [*h.nodes, *h.nodes, *h.nodes, "", "gone"]
    for i in range(draw(st.integers(0, 14))):
        created = T0 - timedelta(seconds=draw(st.integers(0, 300)))
        state = draw(st.sampled_from(OBSERVED))
        node = draw(st.sampled_from(node_ids))
        ended = model.is_terminal(state)
        h.add_task(
            draw(st.sampled_from([*names, "ghost"])),
            draw(st.integers(0, 4)),
            state=state,
            desired=draw(st.sampled_from(DESIRED)),
            node=node,
            exit_code=draw(st.sampled_from([0, 1])) if ended else 0,
            created=created,
            started=min(created + timedelta(seconds=1), T0) if state >= T.RUNNING else None,
            finished=min(created + timedelta(seconds=draw(st.integers(1, 60))), T0)
            if ended
            else None,
            restart_count=draw(st.integers(0, 4)),
            version=draw(st.integers(0, 2)),
            task_id=f"x{i}",
        )
    return h


def check_plan(h: Harness, plan: Plan) -> None:
    """The plan only does what the orchestrator may do."""
    created = [t.id for t in plan.create]
    updated = [t.id for t in plan.update]
    assert len(set(created)) == len(created) and not set(created) & set(h.tasks)
    assert len(set(updated)) == len(updated) and len(set(plan.delete)) == len(plan.delete)
    assert not set(updated) & set(plan.delete)
    for task in plan.update:
        before = h.tasks[task.id]
        assert before.desired_state <= T.RUNNING and task.desired_state == T.SHUTDOWN
        after = type(task)()
        after.CopyFrom(before)
        after.desired_state = T.SHUTDOWN
        assert after == task, "an update changed more than desired_state"
    for task_id in plan.delete:
        task = h.tasks[task_id]
        node_known = task.node_id in h.nodes
        assert model.is_terminal(task.status.state) or not task.node_id or not node_known
    for task in plan.create:
        service = h.services[task.service_id]
        assert 1 <= task.slot <= service.spec.replicas
        assert task.service_version == service.meta.version
        assert task.container == service.spec.container
        assert task.desired_state == T.RUNNING and task.status.state == T.NEW
    if plan.wake_at is not None:
        assert plan.wake_at > h.now


def facts(h: Harness) -> updater.Facts:
    """The orchestrator's node predicates over the harness's nodes."""

    def node_lost(task) -> bool:
        node = h.nodes.get(task.node_id)
        return node is None or node.status.state == T.NODE_DOWN

    return updater.Facts(is_live=h.is_live, node_lost=node_lost)


def check_state(h: Harness) -> None:
    """Slot invariants after a plan was applied."""
    wanting: dict[tuple[str, int], list] = {}
    for task in h.tasks.values():
        if task.desired_state <= T.RUNNING:
            wanting.setdefault((task.service_id, task.slot), []).append(task)
    for (service_id, slot), tasks in wanting.items():
        service = h.services.get(service_id)
        assert service is not None, f"task of removed service {service_id} still wanted"
        assert 1 <= slot <= service.spec.replicas, f"{service_id}.{slot} is out of range"
        # A move off a drained node keeps the old task until the new one runs.
        moving = [t for t in tasks if h.is_draining(t)]
        others = [t for t in tasks if not h.is_draining(t)]
        assert len(moving) <= 1 and len(others) <= 1, f"{service_id}.{slot} has {len(tasks)}"
        if moving and others:
            assert others[0].status.state < T.RUNNING, f"{service_id}.{slot} moved, not stopped"
    for service in h.services.values():
        policy = service.spec.restart_policy
        for slot in range(1, service.spec.replicas + 1):
            if (service.id, slot) not in wanting:
                # Stop-first: an outdated task of the slot is still stopping (the service
                # was made again with another spec); the new one follows once it stopped.
                waits = updater.waits_for_stop(service, h.slot_tasks(service.id, slot), facts(h))
                assert waits, f"{service.id}.{slot} has no task"
                continue
            current = min(wanting[(service.id, slot)], key=h.is_draining)
            always = (
                policy.condition in (T.RESTART_ANY, T.RESTART_CONDITION_UNSPECIFIED)
                and not policy.max_attempts
                and policy.HasField("delay")
                and policy.delay.ToTimedelta() == timedelta(0)
            )
            if always:
                assert h.is_live(current), f"{service.id}.{slot} could restart but did not"
            limit = h.settings.task_history_limit
            if policy.max_attempts and policy.window.ToTimedelta() > timedelta(0):
                limit = max(limit, policy.max_attempts)
            ended = [
                t
                for t in h.slot_tasks(service.id, slot)
                if t is not current and model.is_terminal(t.status.state)
            ]
            assert len(ended) <= limit, f"{service.id}.{slot} keeps {len(ended)} > {limit}"


def drained_duplicates() -> Harness:
    """Two tasks of one slot, both on a drained node, neither ready (a move whose own new
    node was drained before its task got going): found by hypothesis."""
    h = Harness(settings=OrchestratorSettings(task_history_limit=0))
    h.node("n0", availability=T.DRAIN)
    h.service("a", replicas=2)
    for i in range(2):
        h.add_task("a", 2, state=T.NEW, node="n0", created=T0, task_id=f"x{i}")
    return h


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(clusters())
@example(drained_duplicates())
def test_plan_is_consistent_and_idempotent(h: Harness) -> None:
    note(repr(h))
    first = h.reconcile()
    check_plan(h, first)
    h.apply(first)
    check_state(h)
    second = h.reconcile()
    assert second.empty, f"second plan not empty: {second}"
    assert second.wake_at == first.wake_at


@settings(max_examples=200, derandomize=True, deadline=None)
@given(clusters(), st.integers(0, 400))
def test_time_only_brings_restarts(h: Harness, later: int) -> None:
    """After a plan is applied, letting time pass only ever creates restarts: it never
    shuts down or deletes anything (those need a change of state)."""
    note(repr(h))
    h.step()
    live = {t.id for t in h.tasks.values() if h.is_live(t)}
    h.advance(later)
    plan = h.reconcile()
    check_plan(h, plan)
    # Restarts, or retries of a move off a drained node that failed (same count).
    assert all(t.restart_count > 0 or t.status.message.startswith("moves") for t in plan.create)
    assert not live & ({t.id for t in plan.update} | set(plan.delete))
    h.apply(plan)
    check_state(h)


class ClusterLife(RuleBasedStateMachine):
    """A cluster living through random events; after every reconcile the slots are whole."""

    @initialize(
        policy=policies,
        limit=st.integers(0, 3),
    )
    def setup(self, policy, limit: int) -> None:
        self.h = Harness(settings=OrchestratorSettings(task_history_limit=limit))
        for node in ("n1", "n2", "n3"):
            self.h.node(node, cpus=2, memory=1 << 30)
        self.h.service("web", replicas=3, policy=policy)
        self.h.service("db", replicas=1, memory=256 << 20)

    @rule(name=st.sampled_from(["web", "db"]), replicas=st.integers(0, 5))
    def scale(self, name: str, replicas: int) -> None:
        if name in self.h.services:
            self.h.update_service(name, replicas=replicas)

    @rule(name=st.sampled_from(["web", "db"]))
    def new_image(self, name: str) -> None:
        if name in self.h.services:
            self.h.update_service(name, image=f"{name}:{self.h.now.timestamp()}")

    @rule(name=st.sampled_from(["web", "db"]), replicas=st.integers(0, 3))
    def remove_or_recreate(self, name: str, replicas: int) -> None:
        if name in self.h.services:
            self.h.remove_service(name)
        else:
            self.h.service(name, replicas=replicas)

    @rule(pick=st.integers(0, 100), state=st.sampled_from([T.FAILED, T.COMPLETE, T.REJECTED]))
    def task_ends(self, pick: int, state: int) -> None:
        running = sorted(
            t.id
            for t in self.h.tasks.values()
            if t.node_id and not model.is_terminal(t.status.state)
        )
        if running:
            self.h.report(running[pick % len(running)], state, exit_code=pick % 2)

    @rule(node=st.sampled_from(["n1", "n2", "n3"]), status=st.sampled_from(NODE_STATES))
    def node_status(self, node: str, status: int) -> None:
        self.h.set_node(node, status=status)

    @rule(
        node=st.sampled_from(["n1", "n2", "n3"]),
        availability=st.sampled_from([T.ACTIVE, T.PAUSE, T.DRAIN]),
    )
    def node_availability(self, node: str, availability: int) -> None:
        self.h.set_node(node, availability=availability)

    @rule(seconds=st.sampled_from([0.5, 5, 30, 300]))
    def time_passes(self, seconds: float) -> None:
        self.h.advance(seconds)

    @rule()
    def agents(self) -> None:
        self.h.agent_tick()

    @rule()
    def scheduler(self) -> None:
        self.h.place()

    @rule()
    def orchestrator(self) -> None:
        plan = self.h.reconcile()
        check_plan(self.h, plan)
        self.h.apply(plan)
        check_state(self.h)
        again = self.h.reconcile()
        assert again.empty, f"not idempotent: {again}"

    @rule()
    def settle(self) -> None:
        """All nodes up and enough time: every restartable slot ends up running."""
        h = self.h
        for node in h.nodes:
            h.set_node(node, status=T.NODE_READY, availability=T.ACTIVE)
        for _ in range(40):
            h.converge_here()
            plan = h.reconcile()
            if plan.wake_at is None:
                break
            h.now = plan.wake_at
        for service in h.services.values():
            policy = service.spec.restart_policy
            if policy.condition in (T.RESTART_ANY, T.RESTART_CONDITION_UNSPECIFIED) and (
                not policy.max_attempts
            ):
                live = [t for t in h.live(service.id) if t.status.state == T.RUNNING]
                assert sorted(t.slot for t in live) == list(range(1, service.spec.replicas + 1))


ClusterLife.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_cluster_life = ClusterLife.TestCase
