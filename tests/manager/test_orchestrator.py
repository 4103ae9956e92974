"""Unit tests of the replicated orchestrator's rules, one behaviour per test, on the
in-memory harness."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orch.manager.orchestrator.core import reconcile
from orch.manager.orchestrator.plan import OrchestratorSettings, Plan
from orch.proto import types_pb2 as T

from .harness import T0, Harness, restart_policy


def ids(tasks) -> list[str]:
    return sorted(t.id for t in tasks)


def desired(plan: Plan) -> dict[str, int]:
    return {t.id: t.desired_state for t in plan.update}


@pytest.fixture
def h() -> Harness:
    h = Harness()
    h.node("n1")
    h.node("n2")
    return h


# -- creation and slots --


def test_new_service_gets_one_task_per_slot_from_the_spec(h: Harness) -> None:
    svc = h.service("web", replicas=3, memory=64 << 20, networks=["bridge"])
    svc.spec.restart_policy.CopyFrom(restart_policy(T.RESTART_ON_FAILURE, max_attempts=2))
    h.update_service("web")  # version 2
    plan = h.reconcile()
    assert [t.id for t in plan.create] == ["t1", "t2", "t3"]
    assert [t.slot for t in plan.create] == [1, 2, 3]
    assert plan.update == [] and plan.delete == [] and plan.wake_at is None
    for task in plan.create:
        assert task.service_id == "web" and task.service_name == "web"
        assert task.service_version == 2
        assert task.container == svc.spec.container
        assert task.resources.reservations.memory_bytes == 64 << 20
        assert task.restart_policy.condition == T.RESTART_ON_FAILURE
        assert [n.target for n in task.networks] == ["bridge"]
        assert task.desired_state == T.RUNNING
        assert task.status.state == T.NEW
        assert task.status.timestamp.ToDatetime(tzinfo=T0.tzinfo) == T0
        assert task.meta.created_at.ToDatetime(tzinfo=T0.tzinfo) == T0
        assert task.restart_count == 0 and not task.node_id


def test_applied_plan_reconciles_to_nothing(h: Harness) -> None:
    h.service("web", replicas=2)
    h.step()
    assert h.reconcile().empty
    assert h.plans[-1].summary() == "create 0, update 0, delete 0"


def test_missing_slot_is_filled_and_live_ones_are_left_alone(h: Harness) -> None:
    h.service("web", replicas=3)
    h.add_task("web", 1, node="n1", task_id="a")
    h.add_task("web", 3, node="n1", state=T.STARTING, task_id="c")
    plan = h.reconcile()
    assert [(t.slot, t.restart_count) for t in plan.create] == [(2, 0)]
    assert plan.update == [] and plan.delete == []


def test_unassigned_and_disconnected_tasks_are_live(h: Harness) -> None:
    h.service("web", replicas=2)
    h.set_node("n2", status=T.NODE_DISCONNECTED)
    h.add_task("web", 1, state=T.PENDING)
    h.add_task("web", 2, node="n2")
    assert h.reconcile().empty


def test_duplicate_live_tasks_keep_the_most_advanced(h: Harness) -> None:
    h.service("web", replicas=1)
    h.add_task("web", 1, node="n1", state=T.STARTING, created=T0, task_id="new")
    h.add_task("web", 1, node="n2", state=T.RUNNING, created=T0 - timedelta(hours=1), task_id="old")
    plan = h.reconcile()
    assert desired(plan) == {"new": T.SHUTDOWN}
    assert plan.create == [] and plan.delete == []
    h.apply(plan)
    assert ids(h.live("web")) == ["old"]


def test_duplicate_live_tasks_in_the_same_state_keep_the_newest(h: Harness) -> None:
    h.service("web", replicas=1)
    h.add_task("web", 1, node="n1", created=T0 - timedelta(hours=1), task_id="old")
    h.add_task("web", 1, node="n2", created=T0, task_id="new")
    assert desired(h.reconcile()) == {"old": T.SHUTDOWN}


def test_unplaced_duplicate_is_deleted_not_shut_down(h: Harness) -> None:
    h.service("web", replicas=1)
    h.add_task("web", 1, node="n1", task_id="placed")
    h.add_task("web", 1, state=T.PENDING, task_id="waiting")
    plan = h.reconcile()
    assert plan.delete == ["waiting"] and plan.update == []


def test_update_changes_only_desired_state(h: Harness) -> None:
    h.service("web", replicas=0)
    task = h.add_task("web", 1, node="n1", exit_code=3)
    (updated,) = h.reconcile().update
    expected = type(task)()
    expected.CopyFrom(task)
    expected.desired_state = T.SHUTDOWN
    assert updated == expected
    assert task.desired_state == T.RUNNING  # the input is not mutated


# -- scaling --


def test_scale_down_shuts_down_the_highest_slots_then_deletes_them(h: Harness) -> None:
    h.service("web", replicas=4)
    h.converge()
    h.update_service("web", replicas=2)
    plan = h.reconcile()
    assert sorted(t.slot for t in plan.update) == [3, 4]
    assert {t.desired_state for t in plan.update} == {T.SHUTDOWN}
    assert plan.create == [] and plan.delete == []
    h.apply(plan)
    assert h.reconcile().empty  # still stopping: nothing to do until the agent reports
    h.agent_tick()
    plan = h.step()
    assert sorted(plan.delete) == ["t3", "t4"]
    assert [t.slot for t in h.live("web")] == [1, 2]
    assert len(h.tasks) == 2


def test_scale_down_deletes_unplaced_and_ended_tasks_at_once(h: Harness) -> None:
    h.service("web", replicas=1)
    h.add_task("web", 1, node="n1", task_id="keep")
    h.add_task("web", 2, state=T.PENDING, task_id="unplaced")
    h.add_task("web", 3, node="n1", state=T.FAILED, task_id="failed")
    h.add_task("web", 3, node="n1", state=T.SHUTDOWN, desired=T.SHUTDOWN, task_id="old")
    plan = h.reconcile()
    assert sorted(plan.delete) == ["failed", "old", "unplaced"]
    assert plan.update == [] and plan.create == []


def test_scale_to_zero_and_back_starts_fresh_slots(h: Harness) -> None:
    h.service("web", replicas=2)
    h.converge()
    h.update_service("web", replicas=0)
    h.converge()
    assert h.tasks == {}
    h.update_service("web", replicas=2)
    plan = h.step()
    assert [(t.slot, t.restart_count) for t in plan.create] == [(1, 0), (2, 0)]


def test_replica_change_never_replaces_tasks(h: Harness) -> None:
    h.service("web", replicas=2)
    h.converge()
    before = ids(h.live("web"))
    h.update_service("web", replicas=3)
    plan = h.step()
    assert [t.slot for t in plan.create] == [3] and plan.update == []
    assert set(before) <= set(ids(h.live("web")))


# -- spec changes --


def test_spec_change_leaves_old_tasks_and_new_tasks_use_the_new_spec(h: Harness) -> None:
    h.service("web", replicas=2, image="web:1")
    h.converge()
    h.update_service("web", image="web:2")  # version 2
    assert h.reconcile().empty  # no rolling update yet
    h.advance(1)
    h.fail("t1")
    h.advance(10)
    plan = h.step()
    (new,) = plan.create
    assert new.container.image == "web:2" and new.service_version == 2
    assert h.tasks["t2"].container.image == "web:1"
    h.update_service("web", replicas=3)
    (third,) = h.step().create
    assert third.container.image == "web:2" and third.service_version == 3


# -- restarts --


def test_failed_task_is_restarted_after_the_delay(h: Harness) -> None:
    h.service("web")
    h.converge()
    h.advance(60)
    failed_at = h.now
    h.fail("t1")
    plan = h.reconcile()
    assert plan.empty and plan.wake_at == failed_at + timedelta(seconds=5)
    h.advance(4.9)
    assert h.reconcile().create == []
    h.advance(0.1)
    plan = h.step()
    (new,) = plan.create
    assert new.slot == 1 and new.restart_count == 1
    assert new.status.message == "replaces t1"
    assert desired(plan) == {"t1": T.SHUTDOWN}
    assert plan.wake_at is None
    assert h.reconcile().empty


@pytest.mark.parametrize(
    ("condition", "state", "exit_code", "restarts"),
    [
        (T.RESTART_CONDITION_UNSPECIFIED, T.COMPLETE, 0, True),
        (T.RESTART_ANY, T.COMPLETE, 0, True),
        (T.RESTART_ANY, T.FAILED, 1, True),
        (T.RESTART_ON_FAILURE, T.COMPLETE, 0, False),
        (T.RESTART_ON_FAILURE, T.COMPLETE, 3, True),
        (T.RESTART_ON_FAILURE, T.FAILED, 1, True),
        (T.RESTART_ON_FAILURE, T.REJECTED, 0, True),
        (T.RESTART_ON_FAILURE, T.ORPHANED, 0, True),
        (T.RESTART_ON_FAILURE, T.SHUTDOWN, 143, True),
        (T.RESTART_NONE, T.FAILED, 1, False),
        (T.RESTART_NONE, T.ORPHANED, 0, False),
    ],
)
def test_restart_condition(
    h: Harness, condition: int, state: int, exit_code: int, restarts: bool
) -> None:
    h.service("job", policy=restart_policy(condition, delay=0))
    h.add_task("job", 1, node="n1", state=state, exit_code=exit_code, finished=T0)
    plan = h.reconcile()
    assert len(plan.create) == int(restarts)
    assert desired(plan) == ({"t1": T.SHUTDOWN} if restarts else {})
    assert plan.delete == [] and plan.wake_at is None


def test_slot_that_is_not_restarted_stays_done(h: Harness) -> None:
    h.service("job", replicas=2, policy=restart_policy(T.RESTART_ON_FAILURE, delay=0))
    h.converge()
    h.complete("t1")
    h.advance(3600)
    assert h.reconcile().empty  # no new task, the completed one keeps the slot
    assert ids(h.live("job")) == ["t2"]


def test_restart_policy_is_read_from_the_current_spec(h: Harness) -> None:
    h.service("web", policy=restart_policy(T.RESTART_ANY, delay=0))
    h.converge()
    h.fail("t1")
    h.update_service("web", policy=restart_policy(T.RESTART_NONE))
    assert h.reconcile().empty


def test_delay_doubles_per_consecutive_restart_up_to_the_cap(h: Harness) -> None:
    h.service("web", policy=restart_policy(delay=5, max_delay=30))
    h.converge()
    waits = []
    for _ in range(6):
        live = h.live("web")[0].id
        h.advance(1)  # a crash loop: each task runs for a second
        h.fail(live)
        failed_at = h.now
        plan = h.reconcile()
        assert plan.empty
        waits.append((plan.wake_at - failed_at).total_seconds())
        h.now = plan.wake_at
        h.converge()
    assert waits == [5, 10, 20, 30, 30, 30]


def test_a_long_run_resets_the_backoff(h: Harness) -> None:
    h.service("web", policy=restart_policy(delay=5))
    h.converge()
    for _ in range(3):
        h.advance(1)
        h.fail(h.live("web")[0].id)
        h.now = h.reconcile().wake_at
        h.converge()
    h.advance(3600)  # a healthy hour
    h.fail(h.live("web")[0].id)
    assert h.reconcile().wake_at == h.now + timedelta(seconds=5)


def test_default_delays_come_from_the_settings() -> None:
    h = Harness(settings=OrchestratorSettings(restart_delay=timedelta(milliseconds=10)))
    h.node("n1")
    h.service("web")
    h.converge()
    h.fail("t1")
    assert h.reconcile().wake_at == h.now + timedelta(milliseconds=10)


def test_explicit_zero_delay_restarts_at_once(h: Harness) -> None:
    h.service("web", policy=restart_policy(delay=0))
    h.converge()
    h.fail("t1")
    assert len(h.reconcile().create) == 1


def test_delay_longer_than_the_default_cap_is_honoured(h: Harness) -> None:
    h.service("web", policy=restart_policy(delay=120))
    h.converge()
    h.fail("t1")
    assert h.reconcile().wake_at == h.now + timedelta(seconds=120)


def test_delay_counts_from_the_last_status_when_finished_at_is_missing(h: Harness) -> None:
    h.service("web")
    task = h.add_task("web", 1, node="n1", state=T.FAILED, exit_code=1)
    task.status.timestamp.FromDatetime(T0 - timedelta(seconds=2))
    assert h.reconcile().wake_at == T0 + timedelta(seconds=3)


def test_max_attempts_without_window_counts_forever(h: Harness) -> None:
    h.service("web", policy=restart_policy(delay=0, max_attempts=2))
    h.converge()
    for expected in (1, 2):
        h.advance(1)
        h.fail(h.live("web")[0].id)
        (new,) = h.step().create
        assert new.restart_count == expected
        h.converge()
    h.advance(1)
    h.fail(h.live("web")[0].id)
    plan = h.reconcile()
    assert plan.empty and plan.wake_at is None
    h.advance(86400 * 365)
    assert h.reconcile().empty


def test_max_attempts_within_a_window(h: Harness) -> None:
    h.service("web", policy=restart_policy(delay=0, max_attempts=2, window=60))
    h.converge()
    restarted_at = []
    for _ in range(2):
        h.advance(10)
        h.fail(h.live("web")[0].id)
        h.step()
        restarted_at.append(h.now)
        h.converge()
    h.advance(10)
    h.fail(h.live("web")[0].id)
    plan = h.reconcile()
    assert plan.create == []
    assert plan.wake_at == restarted_at[0] + timedelta(seconds=60)  # the oldest leaves the window
    h.now = plan.wake_at
    (new,) = h.step().create
    assert new.restart_count == 3


def test_lowered_max_attempts_waits_until_enough_restarts_leave_the_window(h: Harness) -> None:
    h.service("web", policy=restart_policy(delay=0, max_attempts=5, window=60))
    h.converge()
    for _ in range(3):
        h.advance(10)
        h.fail(h.live("web")[0].id)
        h.converge()
    newest_restart = h.now
    h.update_service("web", policy=restart_policy(delay=0, max_attempts=1, window=60))
    h.advance(10)
    h.fail(h.live("web")[0].id)
    plan = h.reconcile()
    assert plan.create == [] and plan.wake_at == newest_restart + timedelta(seconds=60)


# -- nodes going away --


def test_orphaned_task_is_replaced_at_once(h: Harness) -> None:
    h.service("web", policy=restart_policy(delay=60))
    h.converge()
    h.report("t1", T.ORPHANED)
    plan = h.step()
    assert len(plan.create) == 1 and desired(plan) == {"t1": T.SHUTDOWN}


def test_tasks_on_a_down_node_are_replaced_at_once_elsewhere(h: Harness) -> None:
    h.service("web", replicas=2, policy=restart_policy(delay=60))
    h.converge()
    on_n1 = ids(h.running_on("n1"))
    assert len(on_n1) == 1
    h.set_node("n1", status=T.NODE_DOWN)
    plan = h.step()
    assert len(plan.create) == 1 and desired(plan) == dict.fromkeys(on_n1, T.SHUTDOWN)
    h.converge()
    assert {t.node_id for t in h.live("web")} == {"n2"}
    # n1 comes back: its agent stops the old task, which stays as history.
    h.set_node("n1", status=T.NODE_READY)
    h.converge()
    assert len(h.live("web")) == 2
    assert h.tasks[on_n1[0]].status.state == T.SHUTDOWN


def test_node_back_before_the_shutdown_was_written_keeps_one_task(h: Harness) -> None:
    h.service("web")
    h.add_task("web", 1, node="n1", created=T0 - timedelta(minutes=5), task_id="old")
    h.add_task("web", 1, node="n2", state=T.STARTING, restart_count=1, task_id="new")
    plan = h.reconcile()
    assert desired(plan) == {"new": T.SHUTDOWN}  # the running one wins over the starting one


def test_drained_node_moves_its_tasks_whatever_the_policy(h: Harness) -> None:
    h.service("web", replicas=2, policy=restart_policy(T.RESTART_NONE, delay=60))
    h.converge()
    (moving,) = h.running_on("n1")
    h.set_node("n1", availability=T.DRAIN)
    plan = h.step()
    (new,) = plan.create
    assert new.slot == moving.slot and new.restart_count == moving.restart_count
    assert new.status.message == f"moves {moving.id} off drained node n1"
    h.converge()
    assert {t.node_id for t in h.live("web")} == {"n2"} and len(h.live("web")) == 2
    assert h.tasks[moving.id].status.state == T.SHUTDOWN  # the agent stopped it


def test_a_drain_stops_the_old_task_only_once_its_replacement_runs(h: Harness) -> None:
    h.service("web", replicas=2)
    h.converge()
    (moving,) = h.running_on("n1")
    h.set_node("n1", availability=T.DRAIN)
    (new,) = h.step().create
    assert h.step().empty  # the new one is not placed yet: the old keeps running
    h.place()
    assert h.tasks[new.id].node_id == "n2"
    assert h.step().empty  # assigned, not running: still nothing to stop
    h.run(new.id)
    plan = h.step()
    assert desired(plan) == {moving.id: T.SHUTDOWN} and not plan.create


def test_a_drain_with_nowhere_to_go_keeps_the_task_running(h: Harness) -> None:
    h.service("web", replicas=2)
    h.converge()
    h.set_node("n1", availability=T.DRAIN)
    h.set_node("n2", availability=T.DRAIN)
    h.converge()
    waiting = [t for t in h.tasks.values() if t.status.state == T.PENDING]
    assert len(waiting) == 2  # the moves wait for a node ...
    running = [t for t in h.tasks.values() if t.status.state == T.RUNNING]
    assert len(running) == 2 and all(t.desired_state == T.RUNNING for t in running)  # ... and
    h.set_node("n2", availability=T.ACTIVE)  # the old tasks run until one can take them
    h.converge()
    assert {t.node_id for t in h.live("web")} == {"n2"} and len(h.live("web")) == 2


def test_a_move_whose_new_node_is_drained_too_keeps_one_task_moving(h: Harness) -> None:
    h.node("n3")
    h.service("web")
    h.add_task("web", 1, node="n1", state=T.STARTING, task_id="old")  # not ready yet
    h.set_node("n1", availability=T.DRAIN)
    (move,) = h.step().create
    h.place()
    h.set_node(h.tasks[move.id].node_id, availability=T.DRAIN)  # before it got going
    plan = h.step()
    # The old task is further along: it stays and moves again; the first move ends.
    assert desired(plan) == {move.id: T.SHUTDOWN}
    (again,) = plan.create
    assert again.status.message == "moves old off drained node n1"
    assert h.step().empty


def test_a_failed_move_is_retried_after_the_restart_delay(h: Harness) -> None:
    h.service("web", replicas=1, policy=restart_policy(delay=10))
    h.converge()
    (moving,) = h.running_on("n1")
    h.set_node("n1", availability=T.DRAIN)
    (new,) = h.step().create
    h.place()
    h.fail(new.id)
    plan = h.step()
    assert not plan.create and plan.wake_at == h.now + timedelta(seconds=10)
    assert h.tasks[moving.id].desired_state == T.RUNNING  # still serving meanwhile
    h.advance(10)
    (retry,) = h.step().create
    assert retry.status.message == f"moves {moving.id} off drained node n1"


def test_moves_do_not_count_as_restarts(h: Harness) -> None:
    h.service("web", policy=restart_policy(delay=0, max_attempts=2, window=600))
    h.converge()
    h.advance(1)
    h.fail(h.live("web")[0].id)
    h.converge()  # restart 1 of 2
    h.set_node(h.live("web")[0].node_id, availability=T.DRAIN)
    h.converge()  # a move: keeps restart count 1
    assert [t.restart_count for t in h.slot_tasks("web", 1)] == [0, 1, 1]
    h.advance(1)
    h.fail(h.live("web")[0].id)
    (restart,) = h.step().create  # restart 2 of 2 is still allowed
    assert restart.restart_count == 2


def test_paused_node_keeps_its_tasks(h: Harness) -> None:
    h.service("web", replicas=2)
    h.converge()
    h.set_node("n1", availability=T.PAUSE)
    assert h.reconcile().empty


def test_disconnected_node_is_within_its_grace(h: Harness) -> None:
    h.service("web")
    h.converge()
    h.set_node("n1", status=T.NODE_DISCONNECTED)
    h.set_node("n2", status=T.NODE_DISCONNECTED)
    assert h.reconcile().empty


def test_task_on_a_removed_node_is_replaced_and_deleted(h: Harness) -> None:
    h.service("web")
    h.add_task("web", 1, node="gone", task_id="lost")
    plan = h.reconcile()
    assert len(plan.create) == 1 and plan.delete == ["lost"] and plan.update == []


# -- removed services --


def test_removed_service_shuts_down_then_deletes_everything(h: Harness) -> None:
    h.service("web", replicas=2)
    h.converge()
    h.add_task("web", 3, state=T.NEW, task_id="unplaced")
    h.add_task("web", 1, node="n1", state=T.FAILED, desired=T.SHUTDOWN, task_id="history")
    h.remove_service("web")
    plan = h.step()
    assert sorted(plan.delete) == ["history", "unplaced"]
    assert sorted(t.id for t in plan.update) == ["t1", "t2"]
    assert h.reconcile().empty
    h.agent_tick()
    assert sorted(h.step().delete) == ["t1", "t2"]
    assert h.tasks == {}


# -- history --


def test_history_keeps_the_limit_of_ended_tasks_per_slot() -> None:
    h = Harness(settings=OrchestratorSettings(task_history_limit=2))
    h.node("n1")
    h.service("web", policy=restart_policy(delay=0))
    h.converge()
    for _ in range(4):
        h.advance(20)
        h.fail(h.live("web")[0].id)
        h.converge()
    slot = h.slot_tasks("web", 1)
    assert [t.id for t in slot] == ["t3", "t4", "t5"]  # 2 ended + the live one
    assert [t.status.state for t in slot] == [T.FAILED, T.FAILED, T.RUNNING]
    assert [t.restart_count for t in slot] == [2, 3, 4]


def test_history_limit_zero_deletes_the_replaced_task_in_the_same_plan() -> None:
    h = Harness(settings=OrchestratorSettings(task_history_limit=0))
    h.node("n1")
    h.service("web", policy=restart_policy(delay=0))
    h.converge()
    h.fail("t1")
    plan = h.step()
    assert plan.delete == ["t1"] and plan.update == [] and len(plan.create) == 1
    assert h.reconcile().empty


def test_history_waits_for_stopping_tasks() -> None:
    h = Harness(settings=OrchestratorSettings(task_history_limit=0))
    h.node("n1")
    h.service("web")
    h.add_task("web", 1, node="n1", task_id="live")
    h.add_task("web", 1, node="n1", desired=T.SHUTDOWN, task_id="stopping")
    assert h.reconcile().empty
    h.report("stopping", T.SHUTDOWN)
    assert h.reconcile().delete == ["stopping"]


def test_restart_reads_only_the_history_that_survives_the_plan() -> None:
    # With one ended task kept, the backoff sees two short runs in a row (10s), not three
    # (20s): a decision made on history the plan deletes would flip on the next pass.
    h = Harness(settings=OrchestratorSettings(task_history_limit=1))
    h.node("n1")
    h.service("web")
    for name, age, count, want in (
        ("a", 100, 0, T.SHUTDOWN),
        ("b", 80, 1, T.SHUTDOWN),
        ("c", 15, 2, T.RUNNING),
    ):
        start = T0 - timedelta(seconds=age)
        h.add_task(
            "web",
            1,
            node="n1",
            state=T.FAILED,
            exit_code=1,
            desired=want,
            created=start,
            started=start,
            finished=start + timedelta(seconds=1),
            restart_count=count,
            task_id=name,
        )
    plan = h.step()
    assert [t.restart_count for t in plan.create] == [3]
    assert sorted(plan.delete) == ["a", "b"] and desired(plan) == {"c": T.SHUTDOWN}
    assert h.reconcile().empty


def test_never_placed_task_desired_shutdown_is_deleted(h: Harness) -> None:
    h.service("web")
    h.add_task("web", 1, node="n1", task_id="live")
    h.add_task("web", 1, state=T.PENDING, desired=T.SHUTDOWN, task_id="unplaced")
    assert h.reconcile().delete == ["unplaced"]


def test_window_keeps_enough_history_to_count_attempts() -> None:
    h = Harness(settings=OrchestratorSettings(task_history_limit=1))
    h.node("n1")
    h.service("web", policy=restart_policy(delay=0, max_attempts=3, window=3600))
    h.converge()
    for _ in range(3):
        h.advance(1)
        h.fail(h.live("web")[0].id)
        h.converge()
    h.advance(1)
    h.fail(h.live("web")[0].id)
    plan = h.reconcile()
    assert plan.create == [] and plan.wake_at is not None
    assert len(h.slot_tasks("web", 1)) == 4


# -- inputs --


def test_naive_now_is_read_as_utc(h: Harness) -> None:
    h.service("web")
    plan = reconcile(h.services, [], h.nodes, T0.replace(tzinfo=None), h.settings)
    assert plan.create[0].status.timestamp.ToDatetime(tzinfo=T0.tzinfo) == T0


def test_default_settings_make_random_ids(h: Harness) -> None:
    h.service("web", replicas=2)
    plan = reconcile(h.services, [], h.nodes, T0)
    first, second = (t.id for t in plan.create)
    assert first != second and len(first) == 25
