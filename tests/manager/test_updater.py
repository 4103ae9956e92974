"""Unit tests of the rolling-update planner (manager/orchestrator/updater.py) on in-memory state: one
rule per test, calling `updater.plan` directly on a service and its slots."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orch import model
from orch.manager.orchestrator import updater
from orch.proto import objects_pb2, types_pb2

from .harness import T0
from .update_harness import UpdateConfig, UpdateHarness, UpdateStatus, update_config

FACTS = updater.Facts(is_live=lambda t: updater.model.is_live(t), node_lost=lambda t: False)


@pytest.fixture
def h() -> UpdateHarness:
    h = UpdateHarness()
    h.node("n1")
    return h


def running_service(h: UpdateHarness, replicas: int = 6, **change) -> objects_pb2.Service:
    """A service at v1 with every slot running and ready, then changed by ``change``."""
    h.service("web", replicas=replicas)
    for slot in range(1, replicas + 1):
        h.add_task("web", slot, node="n1", task_id=f"old{slot}")
    h.advance(1)
    return h.change("web", **change) if change else h.services["web"]


def step(h: UpdateHarness, name: str = "web") -> updater.Step:
    service = h.services[name]
    slots = {s: h.slot_tasks(name, s) for s in range(1, service.spec.replicas + 1)}
    return updater.plan(service, slots, h.now, FACTS)


# -- what changes start an update --


def test_replicas_or_labels_alone_need_no_new_tasks(h: UpdateHarness) -> None:
    svc = running_service(h)
    before = objects_pb2.Service()
    before.CopyFrom(svc)
    scaled = h.change("web", replicas=9, labels={"team": "a"})
    assert scaled.meta.version == before.meta.version + 1
    assert not scaled.HasField("previous_spec") and not scaled.HasField("update_status")
    assert step(h).replace == {} and step(h).status is None


def test_an_image_change_keeps_the_previous_spec_and_starts_an_update(h: UpdateHarness) -> None:
    svc = running_service(h, image="busybox:2")
    assert svc.previous_spec.container.image == "busybox:latest"
    assert svc.update_status.state == UpdateStatus.UPDATING
    assert svc.update_status.started_at.ToDatetime(tzinfo=T0.tzinfo) == h.now
    assert updater.template_changed(svc.previous_spec, svc.spec)


def test_a_later_scale_keeps_the_spec_to_roll_back_to(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2")
    svc = h.change("web", replicas=3)
    assert svc.previous_spec.container.image == "busybox:latest"
    back = updater.rolled_back(svc, h.now, "requested")
    assert back.spec.container.image == "busybox:latest" and back.spec.replicas == 3
    assert back.previous_spec.container.image == "busybox:2"
    assert back.update_status.state == UpdateStatus.ROLLING_BACK


def test_rollback_without_a_previous_spec_is_refused(h: UpdateHarness) -> None:
    svc = running_service(h)
    with pytest.raises(ValueError, match="no previous spec"):
        updater.rolled_back(svc, h.now, "requested")


def test_defaults_are_swarms() -> None:
    cfg = updater.Config.of(None)
    assert (cfg.parallelism, cfg.delay, cfg.order, cfg.monitor) == (
        1,
        timedelta(0),
        UpdateConfig.STOP_FIRST,
        timedelta(seconds=5),
    )
    assert (cfg.failure_action, cfg.max_failure_ratio) == (UpdateConfig.PAUSE, 0.0)
    assert updater.Config.of(UpdateConfig(parallelism=0)).batch(6) == 6


# -- batches --


def test_first_batch_is_parallelism_slots_in_the_configured_order(h: UpdateHarness) -> None:
    cfg = update_config(2, order=UpdateConfig.START_FIRST)
    running_service(h, image="busybox:2", update=cfg)
    assert step(h).replace == {1: UpdateConfig.START_FIRST, 2: UpdateConfig.START_FIRST}


def test_no_update_state_no_replacement(h: UpdateHarness) -> None:
    running_service(h)
    h.services["web"].spec.container.image = "busybox:2"  # changed behind the planner's back
    assert step(h).replace == {}


def test_paused_update_replaces_nothing(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2")
    h.services["web"].update_status.state = UpdateStatus.PAUSED
    assert step(h) == updater.Step()


def test_a_replacement_not_ready_holds_the_next_batch(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2", update=update_config(2))
    new = h.add_task("web", 1, node="n1", state=types_pb2.STARTING, task_id="new1")
    h.tasks["old1"].desired_state = types_pb2.SHUTDOWN
    assert updater.classify(h.services["web"], h.slot_tasks("web", 1), FACTS) == updater.BUSY
    assert step(h).replace == {}
    h.run(new.id)
    s = step(h)
    assert list(s.replace) == [2, 3]  # slot 1 done; the next batch starts at once (no delay)
    assert s.status is not None and s.status.batch_ready_at.ToDatetime(tzinfo=T0.tzinfo) == h.now


def test_an_old_task_still_stopping_holds_the_batch(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2")
    h.tasks["old1"].desired_state = types_pb2.SHUTDOWN  # stop-first, not yet stopped
    assert updater.classify(h.services["web"], h.slot_tasks("web", 1), FACTS) == updater.BUSY
    assert updater.waits_for_stop(h.services["web"], h.slot_tasks("web", 1), FACTS)
    assert step(h).replace == {}


def test_health_check_decides_readiness(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2", healthcheck=True)
    new = h.add_task("web", 1, node="n1", task_id="new1")
    new.status.health = types_pb2.HEALTH_STARTING
    assert not model.is_ready(new)
    new.status.health = types_pb2.HEALTH_HEALTHY
    assert model.is_ready(new)


def test_delay_runs_from_the_batch_being_ready(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2", update=update_config(1, delay=3))
    h.tasks["old1"].desired_state = types_pb2.SHUTDOWN
    h.tasks["old1"].status.state = types_pb2.SHUTDOWN
    h.add_task("web", 1, node="n1", task_id="new1")
    h.advance(2)  # the batch is seen ready now
    s = step(h)
    assert s.replace == {} and s.wake_at == h.now + timedelta(seconds=3)
    h.services["web"].update_status.CopyFrom(s.status)
    h.advance(2.9)
    assert step(h).replace == {} and step(h).status is None
    h.advance(0.1)
    assert list(step(h).replace) == [2]


def test_slots_whose_old_task_is_not_ready_go_first(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2", update=update_config(2))
    h.tasks["old4"].status.state = types_pb2.STARTING
    assert list(step(h).replace) == [4, 1]


def test_completion_waits_for_the_monitor_window(h: UpdateHarness) -> None:
    running_service(h, replicas=2, image="busybox:2", update=update_config(0, monitor=4))
    for slot in (1, 2):
        h.tasks[f"old{slot}"].desired_state = types_pb2.SHUTDOWN
        h.tasks[f"old{slot}"].status.state = types_pb2.SHUTDOWN
        h.add_task("web", slot, node="n1", task_id=f"new{slot}")
    h.advance(1)  # seen ready a second after the batch started
    s = step(h)
    assert s.status.state == UpdateStatus.UPDATING and s.wake_at == h.now + timedelta(seconds=4)
    h.services["web"].update_status.CopyFrom(s.status)
    h.advance(4)
    s = step(h)
    assert s.status.state == UpdateStatus.COMPLETED and s.status.message == "update completed"


# -- failures --


def failed_new_task(h: UpdateHarness, slot: int, *, ran: float = 1.0) -> objects_pb2.Task:
    start = h.now
    task = h.add_task("web", slot, node="n1", started=start, task_id=f"new{slot}")
    h.advance(ran)
    h.fail(task.id)
    task.status.err = "unhealthy: 2 consecutive http probe failures"
    return task


@pytest.mark.parametrize(
    ("action", "state"),
    [(UpdateConfig.PAUSE, UpdateStatus.PAUSED), (UpdateConfig.ROLLBACK, None)],
)
def test_a_failure_within_monitor_triggers_the_failure_action(
    h: UpdateHarness, action: int, state: int | None
) -> None:
    running_service(h, image="busybox:2", update=update_config(1, action=action, monitor=5))
    failed_new_task(h, 1)
    s = step(h)
    assert s.replace == {}
    if state is None:
        assert s.rollback and s.status.message.startswith("update failed: 1 task failed")
        assert "unhealthy: 2 consecutive" in s.status.message
    else:
        assert not s.rollback and s.status.state == state
        assert s.status.message.startswith("update paused: 1 task failed (last: web.1 new1")


def test_a_failure_after_monitor_does_not_count(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2", update=update_config(1, monitor=5))
    failed_new_task(h, 1, ran=6)
    assert updater.failures(h.services["web"], h.tasks.values(), h.now) == []


def test_failures_up_to_the_ratio_are_tolerated(h: UpdateHarness) -> None:
    running_service(h, replicas=4, image="busybox:2", update=update_config(2, ratio=0.5))
    failed_new_task(h, 1)
    failed_new_task(h, 2)
    s = step(h)  # 2 of 4 is not above 0.5
    assert not s.rollback and s.status.state == UpdateStatus.UPDATING
    failed_new_task(h, 3)
    assert step(h).status.state == UpdateStatus.PAUSED


def test_continue_moves_on_past_a_failed_slot(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2", update=update_config(1, action=UpdateConfig.CONTINUE))
    h.tasks["old1"].desired_state = types_pb2.SHUTDOWN
    h.tasks["old1"].status.state = types_pb2.SHUTDOWN
    failed_new_task(h, 1)
    s = step(h)
    assert s.status is None or s.status.state == UpdateStatus.UPDATING
    assert list(s.replace) == [2]


def test_a_failure_while_rolling_back_pauses_the_rollback(h: UpdateHarness) -> None:
    running_service(h, image="busybox:2", update=update_config(1, action=UpdateConfig.ROLLBACK))
    h.roll_back("web")
    h.advance(1)
    h.add_task("web", 1, node="n1", started=h.now, task_id="back1")
    h.advance(1)
    h.fail("back1")
    s = step(h)
    assert not s.rollback and s.status.state == UpdateStatus.ROLLBACK_PAUSED


def test_rollback_uses_the_rollback_settings_of_the_spec_rolled_away_from(
    h: UpdateHarness,
) -> None:
    h.service("web", replicas=6)
    h.change("web", image="busybox:2", rollback=update_config(3))
    for slot in range(1, 7):  # the update went through
        h.add_task("web", slot, node="n1")
    svc = h.roll_back("web")
    assert updater.config_for(svc).parallelism == 3
    assert len(step(h).replace) == 3


def test_progress_counts_updated_ready_slots(h: UpdateHarness) -> None:
    running_service(h, replicas=3, image="busybox:2")
    h.tasks["old1"].desired_state = types_pb2.SHUTDOWN
    h.add_task("web", 1, node="n1", task_id="new1")
    p = updater.progress(h.services["web"], h.tasks.values(), h.now)
    assert (p.total, p.updated, p.running, p.healthy, p.failed) == (3, 1, 3, 3, 0)
