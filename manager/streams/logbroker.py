"""Routes `orch logs` readers to the agents that hold the log files.

Logs stay on the node that ran the task. A reader's request becomes one LogSubscription
per node, sent down that node's session; the agent answers on a PublishLogs stream tagged
with the subscription id, and the broker hands the entries to the reader. When the reader
leaves, each node is told to close the subscription. Like swarmkit's logbroker, nothing is
stored on the manager.

A node publishes only what it was asked for: the publishing node (its certificate's id,
never the message's field) must be one the subscription went to, and every entry must be
of a task the subscription asked that node for. Anything else is refused, so no node can
slip lines into another node's logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from orch import model
from orch.errors import NotFoundError, PermissionDeniedError
from orch.proto import control_pb2, dispatcher_pb2, objects_pb2

log = logging.getLogger(__name__)

Send = Callable[[dispatcher_pb2.ManagerMessage], None]


@dataclass
class _Subscription:
    queue: asyncio.Queue[dispatcher_pb2.PublishLogsMessage]
    open_nodes: set[str] = field(default_factory=set)
    tasks: dict[str, frozenset[str]] = field(default_factory=dict)
    """Node id -> the task ids asked of it."""


class LogBroker:
    def __init__(self) -> None:
        self._senders: dict[str, Send] = {}
        self._subs: dict[str, _Subscription] = {}

    # The dispatcher tells the broker which nodes it can reach.

    def attach(self, node_id: str, send: Send) -> None:
        self._senders[node_id] = send

    def detach(self, node_id: str, send: Send) -> None:
        # ==, not "is": each ``outbox.put_nowait`` is a new bound-method object.
        if self._senders.get(node_id) == send:
            del self._senders[node_id]
        for sub_id, sub in self._subs.items():
            if node_id in sub.open_nodes:
                sub.queue.put_nowait(
                    dispatcher_pb2.PublishLogsMessage(
                        subscription_id=sub_id,
                        node_id=node_id,
                        close=True,
                        err=f"node {node_id} disconnected",
                    )
                )

    def connected(self, node_id: str) -> bool:
        """Whether this manager holds the node's session."""
        return node_id in self._senders

    def publish(self, msg: dispatcher_pb2.PublishLogsMessage, node_id: str) -> bool:
        """Entries from the agent of ``node_id`` (its verified identity). False when the
        reader is gone (the agent should stop); PermissionDeniedError when the node was
        not asked for them."""
        sub = self._subs.get(msg.subscription_id)
        if sub is None:
            return False
        asked = sub.tasks.get(node_id)
        if asked is None or msg.node_id not in ("", node_id):
            raise PermissionDeniedError(
                f"node {node_id} may not publish logs of subscription {msg.subscription_id} "
                f"as node {msg.node_id or node_id}: it was not asked for them"
            )
        for entry in msg.entries:
            if entry.task_id not in asked or entry.node_id not in ("", node_id):
                raise PermissionDeniedError(
                    f"node {node_id} may not publish logs of task {entry.task_id}: not one "
                    "of its tasks in this subscription"
                )
        own = dispatcher_pb2.PublishLogsMessage()
        own.CopyFrom(msg)
        own.node_id = node_id  # what the reader trusts: the publisher's identity
        sub.queue.put_nowait(own)
        return True

    async def stream(
        self, tasks: Sequence[objects_pb2.Task], *, follow: bool, tail: int
    ) -> AsyncIterator[control_pb2.LogEntry]:
        by_node: dict[str, list[str]] = {}
        for task in tasks:
            by_node.setdefault(task.node_id, []).append(task.id)
        reachable = {n: ids for n, ids in by_node.items() if n in self._senders}
        if by_node and not reachable:
            raise NotFoundError(
                "the nodes holding these logs are not connected to this manager: "
                + ", ".join(sorted(by_node))
            )
        sub_id = model.new_id()
        sub = _Subscription(
            asyncio.Queue(),
            set(reachable),
            {n: frozenset(ids) for n, ids in reachable.items()},
        )
        self._subs[sub_id] = sub
        try:
            for node_id, task_ids in reachable.items():
                self._senders[node_id](
                    dispatcher_pb2.ManagerMessage(
                        log_subscription=dispatcher_pb2.LogSubscription(
                            id=sub_id, task_ids=task_ids, follow=follow, tail=tail
                        )
                    )
                )
            while sub.open_nodes:
                msg = await sub.queue.get()
                for entry in msg.entries:
                    yield entry
                if msg.close:
                    sub.open_nodes.discard(msg.node_id)
        finally:
            del self._subs[sub_id]
            for node_id in sub.open_nodes:
                send = self._senders.get(node_id)
                if send:
                    with contextlib.suppress(Exception):
                        send(
                            dispatcher_pb2.ManagerMessage(
                                log_subscription=dispatcher_pb2.LogSubscription(
                                    id=sub_id, close=True
                                )
                            )
                        )
