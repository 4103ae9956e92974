"""Runs `orch exec` commands through the agents' sessions held by this manager.

The shape of logbroker.py: an exec becomes an ExecCommand sent down the session of the
node running the task; the agent runs it (runtime/exec.py) and answers on a
Dispatcher.PublishExec stream tagged with the exec id: a "started" message, chunks of
output, then the exit code (or an error). The broker hands those to the Control API call
that asked. When that call ends early (the client left), the agent is told to kill the
command, and the PublishExec call is ended at its next message.

Back-pressure end to end, so a command writing faster than the client reads is slowed
down rather than buffered: each exec has a small bounded queue; the PublishExec handler
awaits room in it before reading the agent's next message, the agent's stream then waits
on gRPC flow control, its bounded queue fills, and the command blocks writing its pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from orch import model
from orch.errors import PermissionDeniedError
from orch.manager.streams.sessionroutes import SHORT_ID, TargetError, task_name
from orch.proto import control_pb2, dispatcher_pb2, objects_pb2

log = logging.getLogger(__name__)

Send = Callable[[dispatcher_pb2.ManagerMessage], None]


@dataclass(frozen=True)
class ExecSettings:
    """Tunables of exec through agent sessions."""

    start_timeout: float = 10.0
    """Seconds a node has to report that the command started (or why it could not); an
    agent that does not know ExecCommand never answers."""
    queue_size: int = 16
    """Messages (output chunks of at most 32 KiB) held per exec between the agent's stream
    and the client's."""


@dataclass
class _Exec:
    node_id: str
    queue: asyncio.Queue[dispatcher_pb2.PublishExecMessage]
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    why_lost: str = ""
    closed: bool = False  # the asking call has ended; drop whatever still comes


class ExecBroker:
    def __init__(self, settings: ExecSettings | None = None) -> None:
        self._settings = settings or ExecSettings()
        self._senders: dict[str, Send] = {}
        self._execs: dict[str, _Exec] = {}

    # The dispatcher tells the broker which nodes it can reach.

    def attach(self, node_id: str, send: Send) -> None:
        self._senders[node_id] = send

    def detach(self, node_id: str, send: Send) -> None:
        # ==, not "is": each ``outbox.put_nowait`` is a new bound-method object.
        if self._senders.get(node_id) == send:
            del self._senders[node_id]
        for ex in self._execs.values():
            if ex.node_id == node_id:
                self._lose(ex, f"node {node_id[:SHORT_ID]} disconnected while the command ran")

    def connected(self, node_id: str) -> bool:
        return node_id in self._senders

    async def receive(
        self, messages: AsyncIterator[dispatcher_pb2.PublishExecMessage], node_id: str
    ) -> None:
        """Serve one PublishExec stream of the agent of ``node_id`` (its verified
        identity): hand its messages to the waiting call, waiting for room
        (back-pressure). Returns when the call is gone or the exec ended; raises
        PermissionDeniedError for output of an exec sent to another node."""
        ex: _Exec | None = None
        try:
            async for msg in messages:
                found = self._execs.get(msg.exec_id)
                if found is not None and (
                    found.node_id != node_id or msg.node_id not in ("", node_id)
                ):
                    raise PermissionDeniedError(
                        f"node {node_id} may not publish the output of exec {msg.exec_id}: "
                        "it was not sent to this node"
                    )
                ex = found
                if ex is None or ex.closed:
                    return
                await ex.queue.put(msg)
                if ex.closed or msg.err or msg.output.exited:
                    return
        finally:
            if ex is not None:
                # The agent's stream ended (or broke) before the command's end: say so
                # rather than leave the call waiting. A no-op when the end was delivered.
                self._lose(ex, "the node's output stream ended before the command exited")

    async def run(
        self, task: objects_pb2.Task, argv: Sequence[str], env: Sequence[str]
    ) -> AsyncIterator[control_pb2.ExecOutput]:
        """Run ``argv`` in ``task``'s container through its node's session here; yields the
        started message, output chunks and the exited message. Raises TargetError when the
        node is not connected here, or the command could not run or finish."""
        send = self._senders.get(task.node_id)
        if send is None:
            raise TargetError(
                f"the node of task {task_name(task)} is not connected to this manager"
            )
        exec_id = model.new_id()
        ex = _Exec(task.node_id, asyncio.Queue(self._settings.queue_size))
        self._execs[exec_id] = ex
        finished = False
        try:
            send(
                dispatcher_pb2.ManagerMessage(
                    exec=dispatcher_pb2.ExecCommand(
                        id=exec_id, task_id=task.id, argv=list(argv), env=list(env)
                    )
                )
            )
            timeout: float | None = self._settings.start_timeout
            while True:
                msg = await self._next(ex, timeout, task)
                timeout = None
                if msg.err:
                    finished = True
                    raise TargetError(f"exec in task {task_name(task)}: {msg.err}")
                yield msg.output
                if msg.output.exited:
                    finished = True
                    return
        finally:
            ex.closed = True
            del self._execs[exec_id]
            while not ex.queue.empty():  # frees a PublishExec handler waiting for room
                ex.queue.get_nowait()
            send = self._senders.get(task.node_id)
            if not finished and send is not None:
                with contextlib.suppress(Exception):
                    send(
                        dispatcher_pb2.ManagerMessage(
                            exec=dispatcher_pb2.ExecCommand(id=exec_id, kill=True)
                        )
                    )

    async def _next(
        self, ex: _Exec, timeout: float | None, task: objects_pb2.Task
    ) -> dispatcher_pb2.PublishExecMessage:
        if not ex.queue.empty():
            return ex.queue.get_nowait()
        if ex.lost.is_set():
            raise TargetError(f"exec in task {task_name(task)}: {ex.why_lost}")
        get = asyncio.ensure_future(ex.queue.get())
        lost = asyncio.ensure_future(ex.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {get, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
            get.cancel()  # a no-op once done; a cancelled get leaves its item queued
        if get.done() and not get.cancelled():
            return get.result()
        if lost in done:
            raise TargetError(f"exec in task {task_name(task)}: {ex.why_lost}")
        raise TargetError(
            f"the node of task {task_name(task)} did not start the command within "
            f"{timeout:g}s (is its agent older than `orch exec`?)"
        )

    def _lose(self, ex: _Exec, why: str) -> None:
        if not ex.lost.is_set():
            ex.why_lost = why
            ex.lost.set()
