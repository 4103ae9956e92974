"""Leader election through etcd: one leased key, created only if absent.

A manager campaigns by creating ``/orch/v1/leader`` with its id, attached to a lease it
keeps alive. Whoever created the key leads until the lease expires (the manager died or
lost etcd) or it resigns. The others watch the key and campaign again when it is deleted.

Holding the key is not a fence by itself (a paused leader may not know it lost): every
write of a control loop carries :meth:`Election.fence`, a compare on the key's value, in
the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from etcd3aio import EtcdError
from etcd3aio.kv import KVService

from orch.errors import StoreError
from orch.manager.store import PREFIX, Fence, Store

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
        try:
            resp = await self._store.client.kv.get(LEADER_KEY)
        except (EtcdError, grpc.aio.AioRpcError) as exc:
            raise StoreError(f"etcd get {LEADER_KEY}: {exc}") from exc
        return resp.kvs[0].value.decode() if resp.kvs else None

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Campaign forever; while leading, run ``lead()`` (cancelled on loss)."""
        while True:
            try:
                lease = await self._campaign()
            except (EtcdError, grpc.aio.AioRpcError, StoreError) as exc:
                log.warning("election: %s", exc)
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
        kv = self._store.client.kv
        while True:
            lease = (await self._store.client.lease.grant(self._settings.lease_ttl)).ID
            resp = await kv.txn(
                [KVService.txn_compare_create_revision(LEADER_KEY, 0)],
                [KVService.txn_op_put(LEADER_KEY, self._id, lease=lease)],
                [KVService.txn_op_get(LEADER_KEY)],
            )
            if resp.succeeded:
                return lease
            await self._store.client.lease.revoke(lease)
            await self._wait_for_vacancy(resp.header.revision)

    async def _wait_for_vacancy(self, revision: int) -> None:
        async for batch in self._store.client.watch.watch(LEADER_KEY, start_revision=revision + 1):
            if any(ev.type == 1 for ev in batch.events):
                return

    async def _lead_while_lease_lives(
        self, lease: int, lead: Callable[[], Awaitable[None]]
    ) -> None:
        leading = asyncio.create_task(lead(), name="leader-loops")
        try:
            while not leading.done():
                ttl = await self._keepalive(lease)
                if ttl <= 0:
                    return
                # asyncio.wait (unlike wait_for on 3.11) never swallows our own cancel.
                await asyncio.wait({leading}, timeout=self._settings.keepalive_interval)
            leading.result()
        finally:
            leading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await leading

    async def _keepalive(self, lease: int) -> int:
        try:
            call = self._store.client.lease.keep_alive(lease)
            try:
                async with asyncio.timeout(self._settings.lease_ttl):
                    async for answer in call:
                        return answer.TTL
                return 0
            finally:
                call.cancel()
        except (EtcdError, grpc.aio.AioRpcError, TimeoutError) as exc:
            log.warning("election: keep-alive failed: %s", exc)
            return 0

    async def _resign(self, lease: int) -> None:
        await self._store.client.lease.revoke(lease)
