"""The task runner when the agent stops (the runner is cancelled): a running container is
left running for the next agent process to adopt (a graceful agent restart must not take
the node's containers with it); a half-made one is removed; a container that ended on its
own is removed as always. Over a recording controller (the whole restart on real runc:
tests/integration/test_agent_graceful_restart.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from orch.agent.health import CheckConfig, ProbeResult
from orch.agent.taskrunner import ExitResult, Prepared, TaskRunner
from orch.proto import objects_pb2, types_pb2


@dataclass
class RecordingController:
    """A container that runs until ``exit`` is set; ``prepared`` gates prepare()."""

    prepared: asyncio.Event = field(default_factory=asyncio.Event)
    exit: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[str] = field(default_factory=list)

    async def exists(self) -> bool:
        return False

    async def prepare(self) -> Prepared:
        await self.prepared.wait()
        return Prepared()

    async def start(self) -> int:
        self.calls.append("start")
        return 4242

    async def wait(self) -> ExitResult:
        await self.exit.wait()
        return ExitResult(exit_code=0)

    async def stop(self, grace: float) -> None:
        self.calls.append("stop")

    async def remove(self) -> None:
        self.calls.append("remove")

    async def probe(self, check: CheckConfig) -> ProbeResult:
        return ProbeResult(True, "")


class Reports(list[int]):
    """The states the runner reported, in order; wait_for() one of them."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def __call__(self, status: objects_pb2.TaskStatus, _attachments: object) -> None:
        self.append(status.state)
        self._changed.set()

    async def wait_for(self, state: int) -> None:
        async with asyncio.timeout(2):
            while state not in self:
                self._changed.clear()
                await self._changed.wait()


def _runner(ctl: RecordingController, reports: Reports) -> TaskRunner:
    task = objects_pb2.Task(id="t1", desired_state=types_pb2.RUNNING)
    task.status.state = types_pb2.ASSIGNED
    return TaskRunner(task, ctl, reports)


async def test_cancelled_while_running_leaves_the_container() -> None:
    ctl, reports = RecordingController(), Reports()
    ctl.prepared.set()
    runner = _runner(ctl, reports)
    job = asyncio.create_task(runner.run())
    await reports.wait_for(types_pb2.RUNNING)
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    assert ctl.calls == ["start"]  # neither stopped nor removed
    assert runner.finished.is_set()


async def test_cancelled_before_running_removes_what_was_made() -> None:
    ctl, reports = RecordingController(), Reports()
    runner = _runner(ctl, reports)
    job = asyncio.create_task(runner.run())
    await reports.wait_for(types_pb2.PREPARING)
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    assert ctl.calls == ["remove"]


async def test_a_container_that_ended_is_removed() -> None:
    ctl, reports = RecordingController(), Reports()
    ctl.prepared.set()
    ctl.exit.set()
    runner = _runner(ctl, reports)
    await asyncio.wait_for(runner.run(), 2)
    assert reports[-1] == types_pb2.COMPLETE
    assert ctl.calls == ["start", "remove"]
