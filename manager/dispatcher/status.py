"""Agents' status reports into etcd: the StatusWriter batches them (at most every
``status_flush`` seconds), each task a guarded update of the fields the agent owns, and
the merge rules of such an update (a report never moves a task's state backwards, nor
overwrites the attachments the allocator wrote).

A node reports only its own tasks, and attachments only on the networks the task is on:
``refusal`` names what is wrong with a report, which then changes nothing (the node id is
the reporter's certificate's, never a field of the report)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from orch import model
from orch.errors import ConflictError, StoreError
from orch.manager.dispatcher.settings import DispatcherSettings
from orch.manager.state.api import Kind, Store, Update
from orch.manager.state.view import ClusterView
from orch.proto import dispatcher_pb2, objects_pb2

log = logging.getLogger(__name__)


class StatusWriter:
    """Gathers agents' status reports and writes them in batches. The latest report of a
    task wins; a report that would move a task's state backwards is dropped (an agent
    replaying old news after a reconnect)."""

    def __init__(self, store: Store, view: ClusterView, settings: DispatcherSettings) -> None:
        self._store = store
        self._view = view
        self._settings = settings
        self._pending: dict[str, tuple[str, dispatcher_pb2.TaskStatusUpdate]] = {}
        self._wakeup = asyncio.Event()

    def add(self, node_id: str, updates: Any) -> None:
        for update in updates:
            self._pending[update.task_id] = (node_id, update)
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self._settings.status_flush)
            self._wakeup.clear()
            pending, self._pending = self._pending, {}
            try:
                await self._flush(pending)
            except StoreError as exc:
                log.warning("status write failed, will retry: %s", exc)
                for task_id, item in pending.items():
                    self._pending.setdefault(task_id, item)
                self._wakeup.set()

    async def _flush(self, pending: dict[str, tuple[str, dispatcher_pb2.TaskStatusUpdate]]) -> None:
        ops = []
        for task_id, (node_id, update) in pending.items():
            current = self._view.get(Kind.TASK, task_id)
            if current is not None and (why := refusal(current.obj, node_id, update)):
                log.warning("status report refused: %s", why)
                continue
            op = status_op(current, node_id, update)
            if op:
                ops.append(op)
        try:
            await self._store.commit_chunked(ops)
        except ConflictError:
            # Someone else wrote some of these tasks meanwhile: redo them one by one
            # from fresh reads.
            for task_id, (node_id, update) in pending.items():
                await self._write_one(task_id, node_id, update)

    async def _write_one(
        self, task_id: str, node_id: str, update: dispatcher_pb2.TaskStatusUpdate
    ) -> None:
        for _ in range(self._settings.write_retries):
            op = status_op(await self._store.get(Kind.TASK, task_id), node_id, update)
            if op is None:
                return
            try:
                await self._store.commit([op])
                return
            except ConflictError:
                continue
        log.warning("task %s: status write kept losing races; dropped", task_id)


def merge_attachments(
    old: Sequence[objects_pb2.NetworkAttachment],
    reported: Sequence[objects_pb2.NetworkAttachment],
) -> list[objects_pb2.NetworkAttachment]:
    """The task's attachments after an agent report. The allocator owns the attachments
    it wrote (cluster addresses on overlay networks); the agent's report adds or replaces
    only the others (the bridge address it gave)."""
    merged = list(old)
    owned = {a.network for a in old}
    for attachment in reported:
        if attachment.network in owned:
            index = next(i for i, a in enumerate(merged) if a.network == attachment.network)
            if not _allocated(merged[index]):
                merged[index] = attachment
        else:
            merged.append(attachment)
            owned.add(attachment.network)
    return merged


def _allocated(attachment: objects_pb2.NetworkAttachment) -> bool:
    # Built-in networks get no cluster address; anything else came from the allocator.
    return attachment.network not in model.BUILTIN_NETWORKS


def refusal(
    task: objects_pb2.Task, node_id: str, update: dispatcher_pb2.TaskStatusUpdate
) -> str | None:
    """Why node ``node_id`` may not report ``update`` of ``task``, or None if it may: the
    task must be assigned to it, and each reported attachment on a network it is on."""
    if task.node_id != node_id:
        return f"node {node_id} reported task {task.id}, which is not assigned to it"
    allowed = set(model.networks_of(task))
    for attachment in update.attachments:
        if attachment.network not in allowed:
            return (
                f"node {node_id} reported an attachment of task {task.id} to network "
                f"{attachment.network!r}, which the task is not on"
            )
    return None


def status_op(current: Any, node_id: str, update: dispatcher_pb2.TaskStatusUpdate) -> Any:
    """The guarded write of ``update`` as node ``node_id`` reported it; None when it
    changes nothing or is refused (see ``refusal``)."""
    if current is None or refusal(current.obj, node_id, update):
        return None
    old = current.obj
    if update.status.state < old.status.state:
        return None
    attachments = merge_attachments(old.attachments, update.attachments)
    if update.status == old.status and attachments == list(old.attachments):
        return None
    task = objects_pb2.Task()
    task.CopyFrom(old)
    task.status.CopyFrom(update.status)
    del task.attachments[:]
    task.attachments.extend(attachments)
    task.meta.updated_at.CopyFrom(model.timestamp())
    return Update(Kind.TASK, task, current.mod_revision)
