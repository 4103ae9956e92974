"""A manager announces itself in etcd while it runs: /orch/v1/managers/<id> on a lease it
keeps alive, so `orch managers` lists exactly the managers that are up (a dead one's key
expires with its lease) without any manager having to know the others.
"""

from __future__ import annotations

import asyncio
import logging

from orch import model
from orch.errors import StoreError
from orch.manager.state.api import Kind, Store
from orch.proto import objects_pb2

log = logging.getLogger(__name__)


async def announce(store: Store, manager_id: str, addr: str, *, ttl: int = 3) -> None:
    """Keep this manager's presence key alive until cancelled; re-create it after a
    lapse (etcd unreachable for longer than ``ttl``)."""
    info = objects_pb2.ManagerInfo(id=manager_id, addr=addr, started_at=model.timestamp())
    while True:
        try:
            lease = await store.grant_lease(ttl)
            await store.put_leased(Kind.MANAGER, info, lease)
            # A refresh every third of the TTL, like etcd's own clients.
            while True:
                if await store.keep_alive(lease) <= 0:
                    break  # lapsed: announce again on a new lease
                await asyncio.sleep(ttl / 3)
        except StoreError as exc:
            log.warning("presence: %s", exc)
            await asyncio.sleep(ttl / 3)
