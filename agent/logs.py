"""Answers the manager's log subscriptions from the containers' log files.

For each subscription the agent opens a Dispatcher.PublishLogs stream and sends the
requested tasks' lines (the last ``tail`` of each, then new ones while following). Tasks
are read concurrently and merged as lines arrive. A ``close`` subscription from the
manager (the reader left) cancels the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from google.protobuf.timestamp_pb2 import Timestamp

from orch.proto import control_pb2, dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2
from orch.runtime.model import LogLine

log = logging.getLogger(__name__)

ReadLogs = Callable[[str, int, bool], AsyncIterator[LogLine]]
BATCH = 64  # entries per PublishLogs message


class LogPublisher:
    def __init__(
        self,
        *,
        node_id: str,
        read_logs: ReadLogs,
        tasks: Callable[[], dict[str, objects_pb2.Task]],
    ) -> None:
        self._node_id = node_id
        self._read = read_logs
        self._tasks = tasks
        self._active: dict[str, asyncio.Task] = {}

    def handle(
        self, sub: dispatcher_pb2.LogSubscription, stub: dispatcher_pb2_grpc.DispatcherStub
    ) -> None:
        if sub.close:
            job = self._active.pop(sub.id, None)
            if job:
                job.cancel()
            return
        job = asyncio.create_task(self._publish(sub, stub), name=f"logs-{sub.id}")
        self._active[sub.id] = job
        job.add_done_callback(lambda _: self._active.pop(sub.id, None))

    async def close(self) -> None:
        for job in list(self._active.values()):
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job

    async def _publish(
        self, sub: dispatcher_pb2.LogSubscription, stub: dispatcher_pb2_grpc.DispatcherStub
    ) -> None:
        try:
            await stub.PublishLogs(self._messages(sub))
        except Exception as exc:  # the reader or the session went away
            log.debug("log subscription %s ended: %s", sub.id, exc)

    async def _messages(
        self, sub: dispatcher_pb2.LogSubscription
    ) -> AsyncIterator[dispatcher_pb2.PublishLogsMessage]:
        queue: asyncio.Queue[control_pb2.LogEntry | None] = asyncio.Queue(maxsize=1024)
        readers = [
            asyncio.create_task(self._read_task(task_id, sub, queue)) for task_id in sub.task_ids
        ]
        open_readers = len(readers)
        try:
            while open_readers:
                batch = []
                entry = await queue.get()
                while True:
                    if entry is None:
                        open_readers -= 1
                    else:
                        batch.append(entry)
                    if len(batch) >= BATCH or queue.empty():
                        break
                    entry = queue.get_nowait()
                if batch:
                    yield self._message(sub.id, batch)
            yield self._message(sub.id, [], close=True)
        finally:
            for r in readers:
                r.cancel()

    async def _read_task(
        self, task_id: str, sub: dispatcher_pb2.LogSubscription, queue: asyncio.Queue
    ) -> None:
        task = self._tasks().get(task_id)
        try:
            async for line in self._read(task_id, sub.tail, sub.follow):
                await queue.put(self._entry(task_id, task, line))
        except Exception as exc:
            log.warning("logs of task %s: %s", task_id, exc)
        finally:
            await queue.put(None)

    def _entry(
        self, task_id: str, task: objects_pb2.Task | None, line: LogLine
    ) -> control_pb2.LogEntry:
        ts = Timestamp()
        with contextlib.suppress(ValueError):
            ts.FromJsonString(line.timestamp)
        return control_pb2.LogEntry(
            task_id=task_id,
            service=task.service_name if task else "",
            slot=task.slot if task else 0,
            node_id=self._node_id,
            timestamp=ts,
            stream=line.stream,
            line=line.line,
        )

    def _message(
        self, sub_id: str, entries: list[control_pb2.LogEntry], close: bool = False
    ) -> dispatcher_pb2.PublishLogsMessage:
        return dispatcher_pb2.PublishLogsMessage(
            subscription_id=sub_id, node_id=self._node_id, entries=entries, close=close
        )
