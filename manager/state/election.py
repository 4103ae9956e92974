"""Leader election through the Store (etcd when it runs): one leased key, created only if
absent.

A manager campaigns by creating ``/orch/v1/leader`` with its id, attached to a lease it
keeps alive. Whoever created the key leads until the lease expires (the manager died or
lost etcd) or it resigns. The others watch the key and campaign again when it is deleted.

Holding the key is not a fence by itself (a paused leader may not know it lost): every
write of a control loop carries :meth:`Election.fence`, a compare on the key's value, in
the same transaction.

etcd faults: a leader steps down when etcd says its lease is gone, or when no keep-alive
got an answer for ``keepalive_grace`` seconds. Not at the first failed keep-alive: while
etcd elects a leader of its own (about 2 s after its leader member died) nothing answers,
yet no lease expires, and the new etcd leader renews every lease; stepping down then
would move the leadership for nothing. After a longer outage (etcd lost quorum) the
manager steps down, campaigns until etcd answers again, and a new term begins (with the
node monitor's grace period). Every etcd call here is bounded by the Store's timeout, so
the election never hangs on an etcd without quorum.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from orch.errors import StoreError
from orch.manager.state.api import PREFIX, Fence, Store

log = logging.getLogger(__name__)

LEADER_KEY = PREFIX + "leader"


@dataclass
class ElectionSettings:
    lease_ttl: int = 3
    """Seconds a leader's lease lives without keep-alive; a dead leader is replaced after
    about this long."""
    keepalive_interval: float = 1.0
    """Seconds between lease keep-alives (a third of the TTL, like etcd's own clients)."""
    retry_interval: float = 0.5
    """Seconds between campaigns while etcd is unreachable."""
    keepalive_grace: float = 6.0
    """Seconds a leader goes on leading while no keep-alive gets an answer (etcd electing
    a new leader member, or without quorum). Longer than etcd's own election (~2 s with
    its default timings) plus one keep-alive attempt; past it the manager steps down."""


class Election:
    def __init__(self, store: Store, manager_id: str, settings: ElectionSettings | None = None):
        self._store = store
        self._id = manager_id
        self._settings = settings or ElectionSettings()
        self.is_leader = False

    @property
    def fence(self) -> Fence:
        return Fence(LEADER_KEY, self._id.encode())

    async def leader(self) -> str | None:
        """The leading manager's id (a linearizable read: StoreError when etcd cannot
        tell, e.g. without quorum)."""
        kv = await self._store.get_key(LEADER_KEY)
        return kv.value.decode() if kv else None

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign forever; while leading, run ``lead()`` (cancelled on loss)."""
        while True:
            try:
                lease = await self._campaign()
            except (StoreError, TimeoutError) as exc:
                log.warning("election: %s", str(exc) or "etcd did not answer")
                await asyncio.sleep(self._settings.retry_interval)
                continue
            log.info("manager %s is the leader", self._id)
            self.is_leader = True
            try:
                await self._lead_while_lease_lives(lease, lead)
            finally:
                self.is_leader = False
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._resign(lease))
            log.warning("manager %s lost the leadership", self._id)

    async def _campaign(self) -> int:
        me = self._id.encode()
        while True:
            lease = await self._store.grant_lease(self._settings.lease_ttl)
            claim = await self._store.create_key(LEADER_KEY, me, lease=lease)
            if claim.created:
                return lease
            await self._store.revoke_lease(lease)
            if claim.holder is not None and claim.holder.value == me:
                # Our own key, from a term whose lease could not be revoked (etcd was
                # down when we stepped down, or our campaign's answer was lost): end it
                # now rather than wait out its TTL.
                await self._store.revoke_lease(claim.holder.lease)
                continue
            await self._wait_for_vacancy(claim.revision)

    async def _wait_for_vacancy(self, revision: int) -> None:
        async for event in self._store.watch_key(LEADER_KEY, revision + 1):
            if event.deleted:
                return

    async def _lead_while_lease_lives(
        self, lease: int, lead: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        leading = asyncio.create_task(lead(), name="leader-loops")
        loop = asyncio.get_running_loop()
        answered = loop.time()
        try:
            while not leading.done():
                ttl = await self._keepalive(lease)
                if ttl is not None and ttl <= 0:
                    return  # etcd says the lease is gone: another manager may lead now
                if ttl is not None:
                    answered = loop.time()
                elif loop.time() - answered > self._settings.keepalive_grace:
                    log.warning(
                        "election: no keep-alive answered for %.0fs; stepping down",
                        loop.time() - answered,
                    )
                    return
                # asyncio.wait (unlike wait_for on 3.11) never swallows our own cancel.
                await asyncio.wait({leading}, timeout=self._settings.keepalive_interval)
            leading.result()
        finally:
            leading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await leading

    async def _keepalive(self, lease: int) -> int | None:
        """The lease's TTL after one refresh (<= 0: it is gone), None without an answer."""
        try:
            async with asyncio.timeout(self._settings.lease_ttl):
                return await self._store.keep_alive(lease)
        except (StoreError, TimeoutError) as exc:
            log.warning("election: keep-alive failed: %s", str(exc) or "no answer")
            return None

    async def _resign(self, lease: int) -> None:
        await self._store.revoke_lease(lease)
