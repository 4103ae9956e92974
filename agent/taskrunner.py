"""One task's life on this node, driven through a small Controller protocol.

The runner walks a task forward: ACCEPTED -> PREPARING -> STARTING -> RUNNING -> an end
state, reporting every step. At any point the manager may set the desired state to
SHUTDOWN; the runner then stops the container (SIGTERM, grace, SIGKILL) and reports
SHUTDOWN. A task the manager marked ORPHANED (its node was declared down) is stopped the
same way, without a report: ORPHANED stays its final state. Whatever the end, the runtime objects (container, mounts, netns) are released
right away; only the log file stays, until the worker forgets the task.

Health: a task whose spec has a health check runs a ``health.Prober`` while RUNNING; each
change of health is reported at once (a status with the same state and the new health).
When it turns UNHEALTHY the runner stops the container like a shutdown and reports FAILED
with the reason ("unhealthy: 3 consecutive http probe failures (last: ...)"), so the
manager restarts the slot per its restart policy. A task without a check reports
HEALTH_NONE.

Lifecycle rules the Controller must honour (like Nomad's runner hooks):
- prepare() is idempotent: called again after an agent restart it finds what exists.
- start() is only called after prepare(); it returns once the process runs.
- wait() returns the exit of a started (or adopted) container; it may be called after
  the agent restarted, and returns at once for a container that already ended.
- stop() is safe to call twice and on a container that never started.
- remove() is safe to call twice; it releases everything but the logs.
- probe() is only called while the container runs, for tasks with a health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from orch import model
from orch.agent.health import CheckConfig, HealthSettings, Prober, ProbeResult, check_config
from orch.errors import ImageError, OrchError
from orch.proto import objects_pb2, types_pb2

log = logging.getLogger(__name__)


@dataclass
class ExitResult:
    exit_code: int
    oom_killed: bool = False
    message: str = ""


@dataclass
class Prepared:
    attachments: list[objects_pb2.NetworkAttachment] = field(default_factory=list)


class Controller(Protocol):
    """What the runner needs from a container runtime, for one task."""

    async def exists(self) -> bool:
        """A container for this task is present (running or ended): adopt it."""
        ...

    async def prepare(self) -> Prepared: ...

    async def start(self) -> int:
        """Start the container; returns its pid."""
        ...

    async def wait(self) -> ExitResult: ...

    async def stop(self, grace: float) -> None: ...

    async def remove(self) -> None: ...

    async def probe(self, check: CheckConfig) -> ProbeResult:
        """Run one health probe against the running container."""
        ...


Report = Callable[[objects_pb2.TaskStatus, list[objects_pb2.NetworkAttachment]], None]


class TaskRunner:
    def __init__(
        self,
        task: objects_pb2.Task,
        controller: Controller,
        report: Report,
        health: HealthSettings | None = None,
    ) -> None:
        self.task = task
        self._check = check_config(task.container.healthcheck, health or HealthSettings())
        self._ctl = controller
        self._report = report
        self._shutdown = asyncio.Event()
        self._status = objects_pb2.TaskStatus()
        self._status.CopyFrom(task.status)
        self._attachments: list[objects_pb2.NetworkAttachment] = list(task.attachments)
        self.finished = asyncio.Event()

    @property
    def status(self) -> objects_pb2.TaskStatus:
        return self._status

    def update(self, task: objects_pb2.Task) -> None:
        """The manager changed the task: its desired state, or it orphaned the task."""
        self.task = task
        if task.desired_state >= types_pb2.SHUTDOWN or task.status.state == types_pb2.ORPHANED:
            self._shutdown.set()

    async def run(self) -> None:
        """Until the task has ended here; then its container is removed. Cancelled (the
        agent is stopping), a running container is left to run on: the next agent
        process adopts it. One not running (half made, or ended) is removed all the same."""
        ended = False
        try:
            await self._run()
            ended = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave the task silently stuck
            ended = True
            log.exception("task %s: runner failed", self.task.id)
            self._set(types_pb2.FAILED, "runner error", err=f"agent error: {exc}")
        finally:
            if ended or self._status.state != types_pb2.RUNNING:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._ctl.remove())
            self.finished.set()

    async def _run(self) -> None:
        if self._status.state == types_pb2.ORPHANED:
            # Lost with its node and replaced elsewhere: stop what survived, quietly. The
            # task stays ORPHANED (a SHUTDOWN report would be a backwards move).
            await self._ctl.stop(self._grace())
            return
        if self.task.desired_state >= types_pb2.SHUTDOWN or self._shutdown.is_set():
            if not model.is_terminal(self._status.state):
                await self._ctl.stop(self._grace())
                self._set(types_pb2.SHUTDOWN, "shut down before it ran")
            return
        adopted = self._status.state >= types_pb2.STARTING and await self._ctl.exists()
        if not adopted:
            if self._status.state >= types_pb2.STARTING:
                # It ran on this node before, but its container is gone: never restart
                # behind the manager's back; report and let the orchestrator decide.
                self._set(types_pb2.FAILED, "container lost", err="container disappeared")
                return
            if not await self._prepare_and_start():
                return
        await self._wait_or_shutdown()

    async def _prepare_and_start(self) -> bool:
        self._set(types_pb2.ACCEPTED, "accepted")
        self._set(types_pb2.PREPARING, "preparing")
        try:
            prepared = await self._unless_shutdown(self._ctl.prepare())
            if prepared is None:
                return False
            self._attachments = prepared.attachments
            self._set(types_pb2.STARTING, "starting")
            pid = await self._unless_shutdown(self._ctl.start())
            if pid is None:
                return False
        except ImageError as exc:
            self._set(types_pb2.REJECTED, "image could not be pulled", err=str(exc))
            return False
        except OrchError as exc:
            self._set(types_pb2.FAILED, "could not start", err=str(exc))
            return False
        self._status.pid = pid
        self._status.started_at.CopyFrom(model.timestamp())
        self._status.health = self._first_health()
        self._set(types_pb2.RUNNING, "started")
        return True

    async def _unless_shutdown(self, coro):
        """Run a step, but give it up if the task is shut down meanwhile."""
        step = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._shutdown.wait())
        done, _ = await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
        if step in done:
            stop.cancel()
            return step.result()
        step.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await step
        await self._ctl.stop(self._grace())
        self._set(types_pb2.SHUTDOWN, "shut down")
        return None

    async def _wait_or_shutdown(self) -> None:
        if self._status.state != types_pb2.RUNNING:
            self._status.health = self._first_health()
            self._set(types_pb2.RUNNING, "adopted")
        waiter = asyncio.ensure_future(self._ctl.wait())
        stop = asyncio.ensure_future(self._shutdown.wait())
        health = asyncio.ensure_future(self._watch_health())
        try:
            done, _ = await asyncio.wait(
                {waiter, stop, health}, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            waiter.cancel()
            raise
        finally:
            # The prober goes first, whatever ended the wait: its probe in flight is
            # cancelled and cleans up (kills its exec process, closes its socket).
            for job in (stop, health):
                job.cancel()
            await asyncio.gather(stop, health, return_exceptions=True)
        if waiter in done:
            result = waiter.result()
            if result.exit_code == 0:
                self._finish(types_pb2.COMPLETE, result, "finished")
            else:
                self._finish(types_pb2.FAILED, result, "exited", err=_exit_error(result))
            return
        await self._ctl.stop(self._grace())
        result = await waiter
        if health in done and not health.cancelled() and health.exception() is None:
            self._finish(types_pb2.FAILED, result, "unhealthy", err=health.result())
        else:
            self._finish(types_pb2.SHUTDOWN, result, "shut down")

    def _first_health(self) -> int:
        return types_pb2.HEALTH_NONE if self._check is None else types_pb2.HEALTH_STARTING

    async def _watch_health(self) -> str:
        """Probe until the task turns unhealthy; returns the error to report. Without a
        check (or after a prober bug, which is logged) it waits until cancelled."""
        if self._check is not None:
            check = self._check
            prober = Prober(
                check,
                probe=lambda: self._ctl.probe(check),
                on_change=self._health_changed,
                started_at=self._started_monotonic(),
                initial=self._status.health
                if self._status.health == types_pb2.HEALTH_HEALTHY
                else types_pb2.HEALTH_STARTING,
            )
            try:
                return await prober.run()
            except Exception:
                log.exception("task %s: health prober failed; probing stops", self.task.id)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def _health_changed(self, health: int, last: ProbeResult) -> None:
        log.info("task %s: %s (%s)", self.task.id, types_pb2.HealthState.Name(health), last.detail)
        self._status.health = health
        self._publish()

    def _started_monotonic(self) -> float:
        """When the container started, on the monotonic clock (from started_at, so an
        adopted task keeps its start period)."""
        now = time.monotonic()
        if not self._status.HasField("started_at"):
            return now
        age = time.time() - self._status.started_at.ToNanoseconds() / 1e9
        return now - max(0.0, age)

    def _finish(self, state: int, result: ExitResult, message: str, err: str = "") -> None:
        self._status.exit_code = result.exit_code
        self._status.oom_killed = result.oom_killed
        self._status.finished_at.CopyFrom(model.timestamp())
        self._set(state, message, err=err)

    def _set(self, state: int, message: str, err: str = "") -> None:
        log.debug("task %s: %s %s", self.task.id, types_pb2.TaskState.Name(state), err)
        self._status.state = state
        self._status.message = message
        self._status.err = err
        self._status.timestamp.CopyFrom(model.timestamp())
        self._publish()

    def _publish(self) -> None:
        """Report the status as it is now (a state change, or a health change)."""
        status = objects_pb2.TaskStatus()
        status.CopyFrom(self._status)
        self._report(status, list(self._attachments))

    def _grace(self) -> float:
        grace = self.task.container.stop_grace_period
        return grace.seconds + grace.nanos / 1e9 if grace.seconds or grace.nanos else 10.0


def _exit_error(result: ExitResult) -> str:
    if result.oom_killed:
        return f"OOMKilled (exit code {result.exit_code})"
    if result.exit_code > 128:
        return f"killed by signal {result.exit_code - 128} (exit code {result.exit_code})"
    return f"exit code {result.exit_code}" + (f": {result.message}" if result.message else "")
