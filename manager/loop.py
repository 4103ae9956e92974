"""The shape every leader control loop shares: watch -> dirty -> debounce -> plan -> commit.

A loop subscribes to the ClusterView for the kinds it cares about. Any change marks it
dirty; it waits for a short quiet gap (bursts of events become one pass, like swarmkit's
scheduler: 50 ms quiet, at most 1 s), asks its pure core for a plan over the view, and
commits the plan in guarded transactions fenced on the leader key. A lost race
(ConflictError) is not retried blindly: the newer state is on its way through the watch,
and that event makes the loop run again. A plan may also ask to be woken at a time
(restart delays).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from orch.errors import ConflictError, StoreError
from orch.manager.state.api import Fence, Kind, Op, Store
from orch.manager.state.view import ClusterView

log = logging.getLogger(__name__)


@dataclass
class LoopSettings:
    quiet: float = 0.02
    """Seconds without new events before a pass runs (debounce)."""
    max_delay: float = 0.25
    """Longest a pass is postponed by a steady stream of events."""
    error_backoff: float = 0.5
    """Seconds to wait after etcd failed before trying again."""


@dataclass
class PassResult:
    ops: Sequence[Op] = ()
    """Independent operations, committed in chunks."""
    wake_at: datetime | None = None
    groups: Sequence[Sequence[Op]] = ()
    """Operations that must land together (a task update and the leases it records);
    a group is never split across transactions."""


class ControlLoop:
    """Subclasses name their ``kinds`` and implement ``plan()``; ``run()`` does the rest."""

    name = "loop"
    kinds: tuple[Kind, ...] = ()

    def __init__(
        self,
        *,
        store: Store,
        view: ClusterView,
        fence: Callable[[], Fence | None],
        settings: LoopSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.view = view
        self._fence = fence
        self._settings = settings or LoopSettings()
        self.clock = clock
        self.passes = 0

    def plan(self, now: datetime) -> PassResult:
        raise NotImplementedError

    async def run(self) -> None:
        queue = self.view.subscribe(*self.kinds)
        try:
            await self.view.ready()
            wake_at: datetime | None = None
            while True:
                wake_at = await self.one_pass()
                await self._wait(queue, wake_at)
        finally:
            self.view.unsubscribe(queue)

    async def one_pass(self) -> datetime | None:
        """Plan over the view and commit; returns when the loop wants to run again
        without a change (None: only on the next change). ``run`` repeats it on changes;
        the simulator (manager/simulator.py) calls it directly, on fake time."""
        result = self.plan(self.clock())
        self.passes += 1
        try:
            if result.ops:
                await self.store.commit_chunked(result.ops, fence=self._fence())
            if result.groups:
                await self.store.commit_groups(result.groups, fence=self._fence())
        except ConflictError as exc:
            log.debug("%s: %s; waiting for the newer state", self.name, exc)
        except StoreError as exc:
            log.warning("%s: %s", self.name, exc)
            await asyncio.sleep(self._settings.error_backoff)
            return self.clock()  # try again at once
        return result.wake_at

    async def _wait(self, queue: asyncio.Queue, wake_at: datetime | None) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
        # that arrives as the queue item does, and the loop would outlive its leadership.
        timeout = None
        if wake_at is not None:
            timeout = max(0.0, (wake_at - self.clock()).total_seconds())
        try:
            async with asyncio.timeout(timeout):
                await queue.get()
        except TimeoutError:
            return
        # Debounce: gather the rest of the burst.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.max_delay
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(self._settings.quiet, left)):
                    await queue.get()
            except TimeoutError:
                return
