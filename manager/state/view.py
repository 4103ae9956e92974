"""An in-memory mirror of orch's etcd keyspace, fed by one snapshot and one watch.

Every manager runs one ClusterView; the Control API reads from it, and every control loop
and agent session subscribes to it instead of opening watches of its own. Subscribers get
each batch of events on an asyncio.Queue; the pure cores then read a consistent snapshot
from the view. When the watch breaks (etcd compacted, etcd restarted) the view takes a
new snapshot and tells subscribers to resync (an event batch of ``None``).

Writers use ``wait_for(revision)`` to read their own writes: after a commit returns
revision R, the view has applied R once ``wait_for(R)`` returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from orch.errors import StoreError
from orch.manager.state.api import Event, EventBatch, Kind, Store, Versioned

log = logging.getLogger(__name__)

# None tells a subscriber "the view was rebuilt: forget incremental state, resync".
Batch = list[Event] | None


@dataclass
class ViewSettings:
    resync_backoff: float = 0.5
    """Seconds to wait before a new snapshot after the watch failed."""
    queue_size: int = 10_000
    """Batches a slow subscriber may fall behind before it is told to resync."""


@dataclass
class _Subscriber:
    queue: asyncio.Queue[Batch]
    kinds: frozenset[Kind]


class ClusterView:
    def __init__(self, store: Store, settings: ViewSettings | None = None) -> None:
        self._store = store
        self._settings = settings or ViewSettings()
        self._objects: dict[Kind, dict[str, Versioned]] = {k: {} for k in Kind}
        self._revision = 0
        self._revision_changed = asyncio.Condition()
        self._subscribers: list[_Subscriber] = []
        self._ready = asyncio.Event()

    @property
    def revision(self) -> int:
        return self._revision

    async def ready(self) -> None:
        await self._ready.wait()

    # Reads. Objects are shared: callers copy before they change one.

    def get(self, kind: Kind, name: str) -> Versioned | None:
        return self._objects[kind].get(kind.key(name))

    def items(self, kind: Kind) -> list[Versioned]:
        return list(self._objects[kind].values())

    def objects(self, kind: Kind) -> Iterator:
        return (v.obj for v in self._objects[kind].values())

    def find(self, kind: Kind, pred: Callable[[Versioned], bool]) -> list[Versioned]:
        return [v for v in self._objects[kind].values() if pred(v)]

    # Subscriptions.

    def subscribe(self, *kinds: Kind) -> asyncio.Queue[Batch]:
        sub = _Subscriber(asyncio.Queue(self._settings.queue_size), frozenset(kinds or Kind))
        self._subscribers.append(sub)
        return sub.queue

    def unsubscribe(self, queue: asyncio.Queue[Batch]) -> None:
        self._subscribers = [s for s in self._subscribers if s.queue is not queue]

    async def wait_for(self, revision: int, timeout: float = 5.0) -> None:
        """Return once the view has applied ``revision`` (read-your-writes)."""
        async with asyncio.timeout(timeout), self._revision_changed:
            await self._revision_changed.wait_for(lambda: self._revision >= revision)

    # The feed.

    async def run(self) -> None:
        """Snapshot, then watch, forever; re-snapshot whenever the watch fails."""
        while True:
            try:
                start = await self._load_snapshot()
                async for events in self._store.watch(start + 1):
                    await self._apply(events)
            except StoreError as exc:
                log.warning("cluster view: %s; taking a new snapshot", exc)
                await asyncio.sleep(self._settings.resync_backoff)

    async def _load_snapshot(self) -> int:
        items, revision = await self._store.snapshot()
        objects: dict[Kind, dict[str, Versioned]] = {k: {} for k in Kind}
        for item in items:
            objects[item.kind][item.key] = item
        self._objects = objects
        first = not self._ready.is_set()
        await self._set_revision(revision)
        self._ready.set()
        if not first:
            for sub in self._subscribers:
                self._offer(sub, None)
        return revision

    async def _apply(self, events: list[Event]) -> None:
        for ev in events:
            table = self._objects[ev.kind]
            if ev.obj is None:
                table.pop(ev.key, None)
            else:
                table[ev.key] = Versioned(ev.kind, ev.key, ev.obj, ev.mod_revision)
        for sub in self._subscribers:
            mine = [e for e in events if e.kind in sub.kinds]
            if mine:
                self._offer(sub, mine)
        newest = max((e.mod_revision for e in events), default=0)
        if isinstance(events, EventBatch):  # it also counts keys that are not objects
            newest = max(newest, events.revision)
        await self._set_revision(newest)

    def _offer(self, sub: _Subscriber, batch: Batch) -> None:
        try:
            sub.queue.put_nowait(batch)
        except asyncio.QueueFull:
            # A subscriber that fell this far behind resyncs from the view instead.
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)

    async def _set_revision(self, revision: int) -> None:
        async with self._revision_changed:
            self._revision = max(self._revision, revision)
            self._revision_changed.notify_all()
