"""Runs the manager's ExecCommands (`orch exec`) in this node's containers.

Each command gets a Dispatcher.PublishExec stream on the session's channel: a "started"
message naming the task, the command's stdout and stderr in chunks of at most
``CHUNK`` bytes as they are read, then its exit code; or one error message when it cannot
run (no such container, container not running, runc failed).

The command belongs to the job, not to the stream: the job starts it, and kills it in
every way the exec can end early: the manager ends the call (its client left), the manager
sends ``kill``, the stream or the session breaks, the agent stops. Output goes through a
bounded queue, so a reader that does not keep up slows the command down (its pipe fills)
instead of filling the agent's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from orch.errors import ContainerError
from orch.proto import control_pb2, dispatcher_pb2, dispatcher_pb2_grpc
from orch.runtime.exec import ExecProcess

log = logging.getLogger(__name__)

CHUNK = 32 * 1024
"""Most bytes of output per message."""
QUEUE = 8
"""Messages waiting for the stream before the command's output is no longer read."""
REAP_TIMEOUT = 5.0
"""Seconds to wait for a killed command's runc to exit (it removes its exec files)."""


class ExecStarter(Protocol):
    """What the runner needs of the runtime (ContainerRuntime)."""

    async def exec(
        self, container_id: str, argv: list[str], *, env: list[str] | None = None
    ) -> ExecProcess: ...


_END = None  # ends a job's message stream


class ExecRunner:
    def __init__(self, *, node_id: str, runtime: ExecStarter) -> None:
        self._node_id = node_id
        self._runtime = runtime
        self._active: dict[str, asyncio.Task] = {}

    def handle(
        self, cmd: dispatcher_pb2.ExecCommand, stub: dispatcher_pb2_grpc.DispatcherStub
    ) -> None:
        if cmd.kill:
            job = self._active.pop(cmd.id, None)
            if job:
                job.cancel()
            return
        job = asyncio.create_task(self._run(cmd, stub), name=f"exec-{cmd.id}")
        self._active[cmd.id] = job
        job.add_done_callback(lambda _: self._active.pop(cmd.id, None))

    async def close(self) -> None:
        """Kill every running command (the agent stops)."""
        jobs = list(self._active.values())
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job

    async def _run(
        self, cmd: dispatcher_pb2.ExecCommand, stub: dispatcher_pb2_grpc.DispatcherStub
    ) -> None:
        queue: asyncio.Queue[dispatcher_pb2.PublishExecMessage | None] = asyncio.Queue(QUEUE)
        producer = asyncio.create_task(self._produce(cmd, queue), name=f"exec-run-{cmd.id}")
        try:
            await stub.PublishExec(_drain(queue))
        except Exception as exc:  # the manager or the session went away
            log.debug("exec %s: stream ended: %s", cmd.id, exc)
        finally:
            # Ends the command unless it has ended already (a no-op then).
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer

    async def _produce(
        self,
        cmd: dispatcher_pb2.ExecCommand,
        queue: asyncio.Queue[dispatcher_pb2.PublishExecMessage | None],
    ) -> None:
        try:
            proc = await self._runtime.exec(cmd.task_id, list(cmd.argv), env=list(cmd.env) or None)
        except ContainerError as exc:
            await queue.put(self._message(cmd.id, err=str(exc)))
            await queue.put(_END)
            return
        log.info("exec %s in task %s: %s", cmd.id, cmd.task_id, command_line(cmd.argv))
        pumps: list[asyncio.Task] = []
        try:
            started = control_pb2.ExecOutput(task_id=cmd.task_id, node_id=self._node_id)
            await queue.put(self._message(cmd.id, output=started))
            pumps = [
                asyncio.create_task(self._pump(cmd.id, proc.stdout, "stdout", queue)),
                asyncio.create_task(self._pump(cmd.id, proc.stderr, "stderr", queue)),
            ]
            await asyncio.gather(*pumps)
            try:
                code = await proc.wait()
            except ContainerError as exc:
                await queue.put(self._message(cmd.id, err=str(exc)))
            else:
                done = control_pb2.ExecOutput(exited=True, exit_code=code)
                await queue.put(self._message(cmd.id, output=done))
            await queue.put(_END)
        finally:
            for pump in pumps:
                pump.cancel()
            proc.kill()  # a no-op when it has ended
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(proc.wait()), REAP_TIMEOUT)

    async def _pump(
        self,
        exec_id: str,
        reader: asyncio.StreamReader,
        stream: str,
        queue: asyncio.Queue[dispatcher_pb2.PublishExecMessage | None],
    ) -> None:
        while data := await reader.read(CHUNK):
            chunk = control_pb2.ExecOutput(stream=stream, data=data)
            await queue.put(self._message(exec_id, output=chunk))

    def _message(
        self, exec_id: str, *, output: control_pb2.ExecOutput | None = None, err: str = ""
    ) -> dispatcher_pb2.PublishExecMessage:
        return dispatcher_pb2.PublishExecMessage(
            exec_id=exec_id, node_id=self._node_id, output=output, err=err
        )


async def _drain(
    queue: asyncio.Queue[dispatcher_pb2.PublishExecMessage | None],
) -> AsyncIterator[dispatcher_pb2.PublishExecMessage]:
    while (msg := await queue.get()) is not _END:
        yield msg


def command_line(argv: Sequence[str]) -> str:
    """For log lines: the command as one short line."""
    return " ".join(argv)[:200]
