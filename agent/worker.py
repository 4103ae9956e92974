"""The agent's worker: makes the node's containers follow its assignment set.

Assignments arrive from the session (a full set on every new session, then changes). The
worker keeps one TaskRunner per task it should act on, and diffs:
- a task new to the worker that is meant to run gets a runner (which adopts the
  container if an earlier agent process started it);
- a task whose desired state became SHUTDOWN is told so (its runner stops it), and so is
  a task the manager marked ORPHANED (its node was declared down and it was replaced);
- a task that left the set is forgotten: its runner is stopped if still running, its
  container removed, and its log file deleted.
Status flows back through ``report`` (the session batches and sends it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from orch import model
from orch.agent.taskrunner import Controller, Report, TaskRunner
from orch.proto import dispatcher_pb2, objects_pb2, types_pb2

log = logging.getLogger(__name__)

StatusSink = Callable[[dispatcher_pb2.TaskStatusUpdate], None]


class ControllerFactory(Protocol):
    def __call__(self, task: objects_pb2.Task) -> Controller: ...

    async def forget(self, task_id: str) -> None:
        """Release what is left of a task that left the node: its logs."""
        ...


class Worker:
    def __init__(self, controllers: ControllerFactory, sink: StatusSink) -> None:
        self._controllers = controllers
        self._sink = sink
        self._runners: dict[str, TaskRunner] = {}
        self._running: dict[str, asyncio.Task] = {}
        self._known: dict[str, objects_pb2.Task] = {}

    @property
    def tasks(self) -> dict[str, objects_pb2.Task]:
        return self._known

    def runner(self, task_id: str) -> TaskRunner | None:
        return self._runners.get(task_id)

    async def assign(self, msg: dispatcher_pb2.Assignments) -> None:
        incoming = {t.id: t for t in msg.tasks}
        gone = set(msg.removed)
        if msg.full:
            gone |= set(self._known) - set(incoming)
        for task_id in gone:
            self._forget(task_id)
        for task in incoming.values():
            self._known[task.id] = task
            runner = self._runners.get(task.id)
            if runner is not None:
                runner.update(task)
            elif self._needs_runner(task):
                self._start_runner(task)

    async def close(self) -> None:
        """Stop following assignments; containers keep running (they outlive agents)."""
        for t in self._running.values():
            t.cancel()
        for t in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    @staticmethod
    def _needs_runner(task: objects_pb2.Task) -> bool:
        if task.status.state == types_pb2.ORPHANED:
            # The manager declared this node lost and replaced the task; a container
            # that survived (a cut link, an agent that was away) must stop.
            return True
        if model.is_terminal(task.status.state):
            return False
        # Desired SHUTDOWN of a task that may have a container (it got past ASSIGNED):
        # a runner stops it. A task still waiting for this node just reports SHUTDOWN.
        return True

    def _start_runner(self, task: objects_pb2.Task) -> None:
        runner = TaskRunner(task, self._controllers(task), self._reporter(task.id))
        self._runners[task.id] = runner
        job = asyncio.create_task(runner.run(), name=f"task-{task.id}")
        self._running[task.id] = job
        job.add_done_callback(lambda _: self._running.pop(task.id, None))

    def _reporter(self, task_id: str) -> Report:
        def report(
            status: objects_pb2.TaskStatus, attachments: list[objects_pb2.NetworkAttachment]
        ) -> None:
            known = self._known.get(task_id)
            if known is not None:
                known.status.CopyFrom(status)
            self._sink(
                dispatcher_pb2.TaskStatusUpdate(
                    task_id=task_id, status=status, attachments=attachments
                )
            )

        return report

    def _forget(self, task_id: str) -> None:
        """Stop (if needed) and release a task that left the node, in the background:
        a stop may take its whole grace period."""
        self._known.pop(task_id, None)
        runner = self._runners.pop(task_id, None)
        if runner is not None:
            shutdown = objects_pb2.Task()
            shutdown.CopyFrom(runner.task)
            shutdown.desired_state = types_pb2.SHUTDOWN
            runner.update(shutdown)
        job = asyncio.create_task(self._release(task_id, runner), name=f"forget-{task_id}")
        self._running[f"forget-{task_id}"] = job
        job.add_done_callback(lambda _: self._running.pop(f"forget-{task_id}", None))

    async def _release(self, task_id: str, runner: TaskRunner | None) -> None:
        if runner is not None:
            await runner.finished.wait()
        try:
            await self._controllers.forget(task_id)
        except Exception:
            log.exception("task %s: could not release its leftovers", task_id)
