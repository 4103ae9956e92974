"""Rolling updates through the real orchestrator and scheduler on the in-memory harness:
whole rollouts round by round, with the number of ready replicas sampled after every
round, plus hypothesis properties over random agent speeds and settings."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orch.manager.orchestrator import updater
from orch.proto import types_pb2

from .update_harness import UpdateConfig, UpdateHarness, update_config


def cluster(replicas: int = 6, *, healthcheck: bool = True) -> UpdateHarness:
    """Three nodes and a service whose every slot runs and is ready."""
    h = UpdateHarness()
    for n in ("n1", "n2", "n3"):
        h.node(n)
    h.service("web", replicas=replicas)
    if healthcheck:
        h.change("web", healthcheck=True)  # version 2; nothing runs yet, nothing to update
    h.roll("web", until=lambda: len(h.ready("web")) == replicas)
    h.services["web"].ClearField("update_status")  # the creation is no rollout
    return h


def images(h: UpdateHarness) -> list[str]:
    return sorted(t.container.image for t in h.ready("web"))


def floor_sampler(h: UpdateHarness, low: list[int]):
    def sample() -> None:
        low[0] = min(low[0], len(h.ready("web")))

    return sample


def test_start_first_never_has_fewer_than_replicas_ready() -> None:
    h = cluster()
    h.change("web", image="busybox:2", update=update_config(2, order=UpdateConfig.START_FIRST))
    low = [6]
    h.roll("web", sample=floor_sampler(h, low))
    assert h.state("web") == "COMPLETED"
    assert low[0] == 6
    assert images(h) == ["busybox:2"] * 6
    live = [t for t in h.tasks.values() if updater.model.is_live(t)]
    assert len(live) == 6  # every old task was shut down


def test_stop_first_never_has_fewer_than_replicas_minus_parallelism() -> None:
    h = cluster()
    h.change("web", image="busybox:2", update=update_config(2))
    low, most_in_flight = [6], [0]

    def sample() -> None:
        floor_sampler(h, low)()
        running = [t for t in h.tasks.values() if t.status.state == types_pb2.RUNNING]
        most_in_flight[0] = max(most_in_flight[0], len(running))

    h.roll("web", sample=sample)
    assert h.state("web") == "COMPLETED"
    assert low[0] == 4
    assert most_in_flight[0] <= 6  # stop-first: a new task starts only once its old one stopped
    assert images(h) == ["busybox:2"] * 6


def test_batches_wait_for_health_and_the_delay() -> None:
    h = cluster(replicas=4)
    start = h.now
    h.change("web", image="busybox:2", update=update_config(2, delay=2, monitor=1))
    rounds = h.roll("web")
    # Two batches: each ~3 rounds to ready (create/place, run, healthy), the delay of 2s
    # between them, and the monitor of 1s after the last.
    assert h.state("web") == "COMPLETED"
    assert 3.0 <= (h.now - start).total_seconds() <= 4.5, rounds


def test_failing_health_check_rolls_back_to_the_old_spec() -> None:
    h = cluster()
    h.bad_images.add("busybox:bad")
    cfg = update_config(2, order=UpdateConfig.START_FIRST, action=UpdateConfig.ROLLBACK)
    h.change("web", image="busybox:bad", update=cfg)
    low = [6]
    h.roll("web", sample=floor_sampler(h, low))
    assert h.state("web") == "ROLLBACK_COMPLETED", h
    svc = h.services["web"]
    assert svc.spec.container.image == "busybox:latest"
    assert svc.previous_spec.container.image == "busybox:bad"
    assert h.status("web").message.startswith(
        "rollback completed (update failed: 2 tasks failed (last: web."
    ), h.status("web").message
    assert images(h) == ["busybox:latest"] * 6
    assert low[0] == 6  # start-first: the bad tasks never displaced a good one


def test_stop_first_rollback_restores_every_slot() -> None:
    h = cluster()
    h.bad_images.add("busybox:bad")
    h.change("web", image="busybox:bad", update=update_config(2, action=UpdateConfig.ROLLBACK))
    low = [6]
    h.roll("web", sample=floor_sampler(h, low))
    assert h.state("web") == "ROLLBACK_COMPLETED"
    h.roll("web", until=lambda: len(h.ready("web")) == 6)
    assert images(h) == ["busybox:latest"] * 6 and low[0] >= 4


def test_a_failure_pauses_and_what_runs_keeps_running() -> None:
    h = cluster()
    h.bad_images.add("busybox:bad")
    h.change("web", image="busybox:bad", update=update_config(2, order=UpdateConfig.START_FIRST))
    h.roll("web")
    assert h.state("web") == "PAUSED"
    assert h.status("web").message.startswith("update paused: 2 tasks failed")
    before = sorted(t.id for t in h.ready("web"))
    for _ in range(20):
        h.round()
        h.advance(0.5)
    assert images(h) == ["busybox:latest"] * 6
    assert sorted(t.id for t in h.ready("web")) == before


def test_manual_rollback_after_a_completed_update() -> None:
    h = cluster()
    h.change("web", image="busybox:2", update=update_config(3))
    h.roll("web")
    assert images(h) == ["busybox:2"] * 6
    h.roll_back("web")
    low = [6]
    h.roll("web", sample=floor_sampler(h, low))
    assert h.state("web") == "ROLLBACK_COMPLETED"
    assert images(h) == ["busybox:latest"] * 6
    assert low[0] == 5  # the rollback settings: defaults, one at a time, stop-first


def test_scaling_alone_replaces_nothing() -> None:
    h = cluster(replicas=3)
    before = {t.id for t in h.ready("web")}
    h.change("web", replicas=5)
    h.roll("web", until=lambda: len(h.ready("web")) == 5)
    assert before <= {t.id for t in h.ready("web")}
    assert not h.services["web"].HasField("update_status")


def test_an_update_while_one_is_running_takes_over() -> None:
    h = cluster()
    h.change("web", image="busybox:2", update=update_config(1, order=UpdateConfig.START_FIRST))
    for _ in range(4):
        h.round()
        h.advance(0.1)
    h.change("web", image="busybox:3")
    h.roll("web")
    assert images(h) == ["busybox:3"] * 6


def test_idempotent_after_each_plan() -> None:
    """Applying a plan and reconciling at the same time yields nothing new."""
    h = cluster()
    h.change("web", image="busybox:2", update=update_config(2, order=UpdateConfig.START_FIRST))
    for _ in range(40):
        h.step()
        assert h.reconcile().empty, h
        h.place()
        h.agent_tick()
        h.advance(0.1)


@settings(
    max_examples=60,
    derandomize=True,  # not flaky: the same examples every run
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    replicas=st.integers(1, 7),
    parallelism=st.integers(0, 4),
    start_first=st.booleans(),
    delay=st.sampled_from([None, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_no_rollout_drops_below_its_floor(
    replicas: int, parallelism: int, start_first: bool, delay: float | None, seed: int
) -> None:
    """Whatever the agents' speed, ready replicas never drop below replicas - parallelism
    (stop-first) or replicas (start-first), and the rollout completes with every slot on
    the new spec."""
    h = cluster(replicas)
    order = UpdateConfig.START_FIRST if start_first else UpdateConfig.STOP_FIRST
    h.change("web", image="busybox:2", update=update_config(parallelism, order=order, delay=delay))
    batch = parallelism or replicas
    floor = replicas if start_first else max(replicas - batch, 0)
    low = [replicas]
    h.roll("web", sample=floor_sampler(h, low), rng=random.Random(seed))
    assert low[0] >= floor, h
    assert h.state("web") == "COMPLETED"
    h.roll("web", until=lambda: len(h.ready("web")) == replicas)
    assert images(h) == ["busybox:2"] * replicas
