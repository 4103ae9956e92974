"""The in-memory harness with what rolling updates need: specs changed the way the Control
API changes them (a new version, the previous spec, an update status), plan service writes
applied, and an agent that reports health (STARTING, then HEALTHY, or UNHEALTHY and FAILED
for images marked bad), step by step, so tests can sample the cluster between steps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from orch import model
from orch.manager.orchestrator import updater
from orch.proto import objects_pb2, specs_pb2, types_pb2

from .harness import Harness, duration

UpdateConfig = specs_pb2.UpdateConfig
UpdateStatus = objects_pb2.UpdateStatus


def update_config(
    parallelism: int = 1,
    *,
    order: int = UpdateConfig.STOP_FIRST,
    delay: float | None = None,
    monitor: float | None = None,
    action: int = UpdateConfig.PAUSE,
    ratio: float = 0.0,
) -> specs_pb2.UpdateConfig:
    cfg = UpdateConfig(
        parallelism=parallelism, order=order, failure_action=action, max_failure_ratio=ratio
    )
    if delay is not None:
        cfg.delay.CopyFrom(duration(delay))
    if monitor is not None:
        cfg.monitor.CopyFrom(duration(monitor))
    return cfg


def http_check() -> specs_pb2.HealthCheck:
    check = specs_pb2.HealthCheck(retries=2)
    check.http.port = 80
    check.interval.CopyFrom(duration(0.5))
    return check


class UpdateHarness(Harness):
    """Harness plus rolling-update helpers. ``bad_images`` fail their health check."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.bad_images: set[str] = set()

    # -- specs, as the Control API writes them --

    def change(
        self,
        name: str,
        *,
        image: str | None = None,
        replicas: int | None = None,
        labels: dict[str, str] | None = None,
        update: specs_pb2.UpdateConfig | None = None,
        rollback: specs_pb2.UpdateConfig | None = None,
        healthcheck: bool | None = None,
    ) -> objects_pb2.Service:
        service = self.services[name]
        spec = specs_pb2.ServiceSpec()
        spec.CopyFrom(service.spec)
        if image is not None:
            spec.container.image = image
        if replicas is not None:
            spec.replicas = replicas
        if labels is not None:
            spec.labels.update(labels)
        if update is not None:
            spec.update.CopyFrom(update)
        if rollback is not None:
            spec.rollback.CopyFrom(rollback)
        if healthcheck is True:
            spec.container.healthcheck.CopyFrom(http_check())
        elif healthcheck is False:
            spec.container.ClearField("healthcheck")
        self.services[name] = updater.with_spec(service, spec, self.now)
        return self.services[name]

    def roll_back(self, name: str) -> objects_pb2.Service:
        self.services[name] = updater.rolled_back(self.services[name], self.now, "requested")
        return self.services[name]

    def status(self, name: str) -> objects_pb2.UpdateStatus:
        return self.services[name].update_status

    def state(self, name: str) -> str:
        return UpdateStatus.State.Name(self.status(name).state)

    # -- the agent, with health --

    def agent_tick(self, chance: Callable[[], bool] = lambda: True) -> int:
        """Every READY node's agent makes one move per task (when ``chance()`` says so):
        start an assigned task (health STARTING when it has a check), turn STARTING health
        HEALTHY (or UNHEALTHY then FAILED for a bad image), stop a task desired SHUTDOWN."""
        changed = 0
        for task in list(self.tasks.values()):
            node = self.nodes.get(task.node_id)
            if node is None or node.status.state != types_pb2.NODE_READY:
                continue
            if model.is_terminal(task.status.state) or not chance():
                continue
            check = task.container.HasField("healthcheck")
            if task.desired_state != types_pb2.RUNNING:
                self.report(task.id, types_pb2.SHUTDOWN, exit_code=143)
            elif task.status.state != types_pb2.RUNNING:
                self.run(task.id)
                task.status.health = types_pb2.HEALTH_STARTING if check else types_pb2.HEALTH_NONE
            elif task.status.health == types_pb2.HEALTH_STARTING:
                if task.container.image in self.bad_images:
                    task.status.health = types_pb2.HEALTH_UNHEALTHY
                    self.report(task.id, types_pb2.FAILED, exit_code=137)
                    task.status.err = "unhealthy: 2 consecutive http probe failures"
                else:
                    task.status.health = types_pb2.HEALTH_HEALTHY
            else:
                continue
            changed += 1
        return changed

    def round(self, chance: Callable[[], bool] = lambda: True) -> bool:
        """One round of the control loops and the agents; True when anything changed."""
        plan = self.step()
        placed = [d for d in self.place() if d.node_id]
        moved = self.agent_tick(chance)
        return not plan.empty or bool(placed) or bool(moved)

    def ready(self, name: str) -> list[objects_pb2.Task]:
        """Tasks desired and observed RUNNING and ready (healthy, or without a check): what
        the integration test samples through the Control API."""
        return [
            t
            for t in self.tasks.values()
            if t.service_id == name and t.desired_state == types_pb2.RUNNING and model.is_ready(t)
        ]

    def roll(
        self,
        name: str,
        *,
        until: Callable[[], bool] | None = None,
        sample: Callable[[], None] = lambda: None,
        tick: float = 0.1,
        rounds: int = 5000,
        rng: random.Random | None = None,
    ) -> int:
        """Run rounds, moving time by ``tick`` each, calling ``sample`` after every round,
        until the update is no longer active (or ``until``). Returns the rounds taken."""
        done = until or (lambda: self.status(name).state not in updater.ACTIVE)
        chance = (lambda: rng.random() < 0.5) if rng is not None else (lambda: True)
        for n in range(rounds):
            self.round(chance)
            sample()
            if done():
                return n
            self.advance(tick)
        raise AssertionError(f"rollout of {name} did not end in {rounds} rounds:\n{self!r}")

    def elapsed(self, since) -> timedelta:
        return self.now - since
