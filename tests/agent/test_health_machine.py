"""The pure parts of health checking: the state machine (results and times in, states
out), the check's defaults, where a task is probed, the error text; and the task runner's
health reporting over a scripted controller (the real probes are in test_health_probes.py,
the whole chain in tests/integration/test_health.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from orch.agent.health import (
    HEALTHY,
    STARTING,
    UNHEALTHY,
    CheckConfig,
    HealthMachine,
    HealthSettings,
    Prober,
    ProbeResult,
    ProbeTarget,
    check_config,
    probe_target,
    unhealthy_error,
)
from orch.agent.taskrunner import ExitResult, Prepared, TaskRunner
from orch.overlay.driver import Attachment
from orch.overlay.records import EndpointInfo
from orch.proto import objects_pb2, specs_pb2, types_pb2


def feed(machine: HealthMachine, results: list[tuple[bool, float]]) -> list[int]:
    return [machine.observe(ok, at) or machine.state for ok, at in results]


def test_starting_until_the_first_success_then_healthy() -> None:
    m = HealthMachine(retries=3, start_period=0, started_at=0)
    assert m.state == STARTING
    assert m.observe(True, 1) == HEALTHY
    assert m.observe(True, 2) is None  # no change, nothing to report


def test_retries_consecutive_failures_make_it_unhealthy() -> None:
    m = HealthMachine(retries=3, start_period=0, started_at=0)
    assert feed(m, [(True, 1), (False, 2), (False, 3), (True, 4)]) == [HEALTHY] * 4
    assert m.failures == 0  # a success resets the streak
    assert m.observe(False, 5) is None and m.observe(False, 6) is None
    assert m.observe(False, 7) == UNHEALTHY


def test_failures_in_the_start_period_do_not_count() -> None:
    m = HealthMachine(retries=2, start_period=10, started_at=100)
    assert feed(m, [(False, 101), (False, 105), (False, 109.9)]) == [STARTING] * 3
    assert m.failures == 0
    assert m.observe(False, 110) is None  # the period is over: this one counts
    assert m.observe(False, 111) == UNHEALTHY


def test_a_success_ends_the_start_period() -> None:
    """Docker: once healthy, failures count even inside the start period."""
    m = HealthMachine(retries=2, start_period=60, started_at=0)
    assert m.observe(True, 1) == HEALTHY
    assert m.observe(False, 2) is None
    assert m.observe(False, 3) == UNHEALTHY


def test_a_probe_that_began_in_the_period_does_not_count() -> None:
    """The time is when the probe began, as in Docker: a slow probe that started in the
    period and ended after it is still forgiven."""
    m = HealthMachine(retries=1, start_period=5, started_at=0)
    assert m.observe(False, 4.99) is None and m.state == STARTING


def test_unhealthy_recovers_on_success() -> None:
    m = HealthMachine(retries=1, start_period=0, started_at=0)
    assert m.observe(False, 1) == UNHEALTHY
    assert m.observe(True, 2) == HEALTHY


@given(
    retries=st.integers(1, 5),
    start_period=st.floats(0, 20),
    results=st.lists(st.tuples(st.booleans(), st.floats(0, 1)), max_size=40),
)
def test_properties(retries: int, start_period: float, results: list[tuple[bool, float]]) -> None:
    """Against a direct reading of the rules: UNHEALTHY exactly when the last ``retries``
    counted results failed with no success after them; never HEALTHY before a success;
    a change is reported exactly when the state changed."""
    m = HealthMachine(retries=retries, start_period=start_period, started_at=0)
    at, streak, seen_success = 0.0, 0, False
    for ok, step in results:
        at += step
        before = m.state
        changed = m.observe(ok, at)
        forgiven = not ok and not seen_success and at < start_period
        if ok:
            streak, seen_success = 0, True
        elif not forgiven:
            streak += 1
        assert (changed is not None) == (m.state != before)
        assert m.failures == streak
        if streak >= retries:
            assert m.state == UNHEALTHY
        elif seen_success:
            assert m.state == HEALTHY
        else:
            assert m.state == STARTING


def test_check_config_applies_dockers_defaults() -> None:
    check = specs_pb2.HealthCheck(http=specs_pb2.HttpProbe(port=80))
    config = check_config(check, HealthSettings())
    assert config == CheckConfig("http", 30.0, 30.0, 3, 0.0, port=80, path="/", scheme="http")
    check.interval.FromMilliseconds(250)
    check.start_period.FromSeconds(4)
    check.retries = 1
    check.exec.command.extend(["true"])  # replaces http: one probe
    config = check_config(check, HealthSettings(timeout=2))
    assert (config.kind, config.command, config.interval, config.timeout) == (
        "exec",
        ("true",),
        0.25,
        2,
    )
    assert (config.retries, config.start_period) == (1, 4.0)
    assert check_config(specs_pb2.HealthCheck(), HealthSettings()) is None


def _endpoint(networks: tuple[str, ...], *attachments: tuple[str, str], netns: str | None):
    return EndpointInfo(
        endpoint_id="t1",
        networks=networks,
        netns_path=netns,
        attachments=tuple(Attachment(n, a, "", "", "") for n, a in attachments),
    )


def test_probe_target() -> None:
    bridge = _endpoint(("bridge",), ("bridge", "10.213.0.5/24"), netns="/run/netns/x-t1")
    assert probe_target(bridge) == ProbeTarget("10.213.0.5")
    two = _endpoint(
        ("front", "bridge"),
        ("bridge", "10.213.0.5/24"),
        ("front", "10.10.0.7/24"),
        netns="/run/netns/x-t1",
    )
    assert probe_target(two) == ProbeTarget("10.10.0.7")  # the first network's address
    host = _endpoint(("host",), ("host", "10.212.3.11/24"), netns=None)
    assert probe_target(host) == ProbeTarget("127.0.0.1")
    none = _endpoint(("none",), netns="/run/netns/x-t1")
    assert probe_target(none) == ProbeTarget("127.0.0.1", "x-t1")


def test_unhealthy_error_text() -> None:
    http = CheckConfig("http", 1, 1, 3, 0, port=80, path="/health")
    last = ProbeResult(False, "GET http://10.0.3.5:80/health -> 500")
    assert unhealthy_error(http, last) == (
        "unhealthy: 3 consecutive http probe failures (last: GET http://10.0.3.5:80/health -> 500)"
    )
    once = CheckConfig("exec", 1, 1, 1, 0, command=("false",))
    long = ProbeResult(False, "exit 1: " + "x" * 500)
    text = unhealthy_error(once, long, limit=50)
    assert text.startswith("unhealthy: 1 exec probe failure (last: exit 1: xxx")
    assert text.endswith("…)") and len(text) < 100


async def test_prober_reports_changes_and_returns_the_reason() -> None:
    results = iter([False, True, True, False, False])
    changes: list[int] = []

    async def probe() -> ProbeResult:
        ok = next(results)
        return ProbeResult(ok, "ok" if ok else "GET http://a:1/ -> 503")

    check = CheckConfig("http", 0.001, 1, 2, 0, port=1)
    prober = Prober(check, probe, lambda state, _: changes.append(state), started_at=0)
    async with asyncio.timeout(10):
        reason = await prober.run()
    assert changes == [HEALTHY, UNHEALTHY]
    assert reason == "unhealthy: 2 consecutive http probe failures (last: GET http://a:1/ -> 503)"


async def test_prober_times_out_a_probe_that_ignores_its_timeout() -> None:
    async def hang() -> ProbeResult:
        await asyncio.Event().wait()
        raise AssertionError

    check = CheckConfig("tcp", 0.001, 0.01, 1, 0, port=1)
    prober = Prober(check, hang, lambda *_: None, started_at=0)
    async with asyncio.timeout(10):
        assert await prober.run() == "unhealthy: 1 tcp probe failure (last: timed out after 0.01s)"


# -- the task runner's side, over a scripted controller ------------------------------------


@dataclass
class ScriptedController:
    """Runs "a container" that ends only when stopped; probes answer from ``script``
    (the last answer repeats)."""

    script: list[bool]
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    probes: int = 0
    in_flight: int = 0
    probed_5: asyncio.Event = field(default_factory=asyncio.Event)

    async def exists(self) -> bool:
        return False

    async def prepare(self) -> Prepared:
        return Prepared(
            [objects_pb2.NetworkAttachment(network="bridge", addresses=["10.0.0.2/24"])]
        )

    async def start(self) -> int:
        return 4242

    async def wait(self) -> ExitResult:
        await self.stopped.wait()
        return ExitResult(exit_code=143)

    async def stop(self, grace: float) -> None:
        self.stopped.set()

    async def remove(self) -> None:
        pass

    async def probe(self, check: CheckConfig) -> ProbeResult:
        ok = self.script[min(self.probes, len(self.script) - 1)]
        self.probes += 1
        if self.probes >= 5:
            self.probed_5.set()
        self.in_flight += 1
        try:
            await asyncio.sleep(0)
            return ProbeResult(ok, "exit 0" if ok else "exit 1: not yet")
        finally:
            self.in_flight -= 1


def _task(check: specs_pb2.HealthCheck | None) -> objects_pb2.Task:
    task = objects_pb2.Task(id="t1", desired_state=types_pb2.RUNNING)
    task.status.state = types_pb2.ASSIGNED
    task.container.stop_grace_period.FromMilliseconds(10)
    if check is not None:
        task.container.healthcheck.CopyFrom(check)
    return task


def _exec_check(retries: int) -> specs_pb2.HealthCheck:
    check = specs_pb2.HealthCheck(exec=specs_pb2.ExecProbe(command=["true"]), retries=retries)
    check.interval.FromMilliseconds(1)
    return check


async def test_runner_reports_health_and_fails_an_unhealthy_task() -> None:
    reports: list[objects_pb2.TaskStatus] = []
    ctl = ScriptedController([True, False])
    runner = TaskRunner(_task(_exec_check(2)), ctl, lambda s, _: reports.append(s))
    async with asyncio.timeout(10):
        await runner.run()
    seen = [
        (types_pb2.TaskState.Name(s.state), types_pb2.HealthState.Name(s.health)) for s in reports
    ]
    assert seen[-4:] == [
        ("RUNNING", "HEALTH_STARTING"),
        ("RUNNING", "HEALTH_HEALTHY"),
        ("RUNNING", "HEALTH_UNHEALTHY"),
        ("FAILED", "HEALTH_UNHEALTHY"),
    ]
    final = reports[-1]
    assert final.err == "unhealthy: 2 consecutive exec probe failures (last: exit 1: not yet)"
    assert (final.message, final.exit_code) == ("unhealthy", 143)
    assert ctl.stopped.is_set() and ctl.in_flight == 0
    # A health change keeps the time the state was entered.
    assert reports[-2].timestamp == reports[-4].timestamp


async def test_runner_without_a_check_reports_health_none_and_never_probes() -> None:
    reports: list[objects_pb2.TaskStatus] = []
    ctl = ScriptedController([False])
    task = _task(None)
    running = asyncio.Event()

    def report(status: objects_pb2.TaskStatus, _: object) -> None:
        reports.append(status)
        if status.state == types_pb2.RUNNING:
            running.set()

    runner = TaskRunner(task, ctl, report)
    job = asyncio.create_task(runner.run())
    async with asyncio.timeout(10):
        await running.wait()
    assert reports[-1].health == types_pb2.HEALTH_NONE
    shutdown = objects_pb2.Task()
    shutdown.CopyFrom(task)
    shutdown.desired_state = types_pb2.SHUTDOWN
    runner.update(shutdown)
    async with asyncio.timeout(10):
        await job
    assert reports[-1].state == types_pb2.SHUTDOWN and ctl.probes == 0


async def test_shutdown_stops_probing_without_failing_the_task() -> None:
    reports: list[objects_pb2.TaskStatus] = []
    ctl = ScriptedController([True])
    task = _task(_exec_check(3))
    runner = TaskRunner(task, ctl, lambda s, _: reports.append(s))
    job = asyncio.create_task(runner.run())
    async with asyncio.timeout(10):
        await ctl.probed_5.wait()
    shutdown = objects_pb2.Task()
    shutdown.CopyFrom(task)
    shutdown.desired_state = types_pb2.SHUTDOWN
    runner.update(shutdown)
    async with asyncio.timeout(10):
        await job
    # The runner awaited its prober's end: no probe runs on, none can start later.
    assert ctl.in_flight == 0 and runner.finished.is_set()
    assert (reports[-1].state, reports[-1].health) == (types_pb2.SHUTDOWN, types_pb2.HEALTH_HEALTHY)
