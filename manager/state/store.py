"""The manager's only door to etcd: typed reads, guarded transactions and a watch, as
:class:`EtcdStore`, which implements the :class:`~orch.manager.state.api.Store` protocol.

Every object lives at ``/orch/v1/<kind>/<key>`` as protobuf JSON, so ``etcdctl get
--prefix /orch/`` reads like a document. Writes go through :meth:`EtcdStore.commit`, which
turns a list of operations into one etcd transaction: a create only succeeds if the key
is absent, an update or delete only if the key still has the ``mod_revision`` the caller
read. A lost race raises :class:`ConflictError`; the caller re-reads (its cache catches up
through the watch) and decides again. An optional fence compare (the leader key) rides
along in the same transaction, so a deposed leader cannot write.

etcd is reached over TLS only, with a client certificate of etcd's own CA
(``EtcdClientTLS``, identity/etcdpki.py): ``connect`` has no plaintext mode and refuses an
``http://`` endpoint.

etcd errors are translated to :class:`StoreError` here and nowhere else: no other module
imports etcd3aio (the local cluster's etcd supervision aside). The keyspace, the
operations and the ``Store`` protocol live in ``api.py``, which knows nothing of etcd:
the rest of the manager imports them from there.

Every call is bounded: it answers or fails with StoreError within ``timeout``
(``DEFAULT_TIMEOUT``, 10 s), also when etcd has lost quorum (etcd itself keeps a request
waiting for 7 s, its own request timeout, and our client would retry it). A call issued
while etcd elects a leader waits for the election rather than failing, as a write to
Swarm's raft store or to Kubernetes' API server would: the bound is what a user waits at
most when etcd has no quorum at all. Within that bound a call that got no answer is tried
again, each attempt at most ``attempt_timeout``: when the etcd leader dies, a request the
followers had forwarded to it is lost and would wait out the whole timeout, while the same
request sent again after the election (about 1-2 s) succeeds at once. The client spreads calls over
every endpoint (gRPC round robin over ``ipv4:a,b,c``) and skips a member that is down.
A retried transaction is still guarded: if the lost attempt did land after all, the retry
fails its compare and the caller sees a ConflictError, never a double write.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from etcd3aio import Etcd3Client, EtcdConnectionError, EtcdError, EtcdTransientError
from etcd3aio._protobuf import Compare
from etcd3aio.kv import KVService, prefix_range_end
from google.protobuf.message import Message

from orch.errors import ConflictError, IdentityError, StoreError
from orch.identity.etcdpki import SERVER_NAME, EtcdClientTLS, check_endpoints
from orch.manager.state.api import (
    PREFIX,
    CommitBatches,
    Create,
    Created,
    Event,
    EventBatch,
    Fence,
    KeyEvent,
    KeyValue,
    Kind,
    Op,
    QuietSince,
    Unmodified,
    Update,
    Versioned,
    check_size,
    decode,
    describe,
    encode,
    op_key,
    parse_key,
)

# Seconds any etcd call may take before it fails with StoreError. An etcd leader election
# on this 2-core VM takes 1.3 s p50, 2.6 s p99 under the stress hogs (bench/etcd_election.py,
# bench/RESULTS.md), but one under `make test-stress` once left a read unanswered for over
# 5 s, the bound before: each split vote adds a randomized election timeout of 1-2 s. 10 s is
# almost four times that p99 (a few split-vote rounds) and above etcd's own request timeout
# (7 s), so etcd's answer comes before ours.
DEFAULT_TIMEOUT = 10.0
# Seconds before a call that failed at once (no member reachable) is sent again.
_RETRY_PAUSE = 0.2
_DELETE = 1  # mvccpb.Event.DELETE

R = TypeVar("R")


class EtcdStore(CommitBatches):
    """Typed access to orch's etcd keyspace. One per manager process.

    ``timeout``: seconds any call may take before it fails with StoreError (the bound a
    user waits for an answer while etcd has no quorum). ``attempt_timeout``: seconds one
    attempt of a call waits before it is sent again, within ``timeout``; longer than any
    healthy call takes, shorter than an etcd leader election plus a retry."""

    def __init__(
        self,
        client: Etcd3Client,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempt_timeout: float = 2.0,
    ) -> None:
        self._client = client
        self._kv: KVService = client.kv
        self._timeout = timeout
        self._attempt_timeout = min(attempt_timeout, timeout)

    @property
    def client(self) -> Etcd3Client:
        """The etcd client itself, for what is about etcd rather than orch's keyspace
        (tests that inspect a lease's TTL on the server)."""
        return self._client

    @property
    def timeout(self) -> float:
        """Seconds a call may take before it fails with StoreError."""
        return self._timeout

    @classmethod
    async def connect(
        cls, endpoints: Sequence[str], *, tls: EtcdClientTLS, timeout: float = DEFAULT_TIMEOUT
    ) -> EtcdStore:
        """A store on the etcd cluster at ``endpoints`` (all of them: calls go to any
        member that is up), once one linearizable read went through. Always over TLS
        with ``tls``'s client certificate; members are verified by the name
        ``orch-etcd`` (etcdpki.SERVER_NAME), whatever address was dialled."""
        try:
            endpoints = check_endpoints(list(endpoints))
        except IdentityError as exc:
            raise StoreError(str(exc)) from None
        client = Etcd3Client(endpoints, tls_server_name=SERVER_NAME, **tls.channel_args())
        try:
            await client.connect()
            store = cls(client, timeout=timeout)
            await store.revision()
        except (StoreError, OSError) as exc:
            await client.close()
            raise StoreError(f"cannot reach etcd at {','.join(endpoints)}: {exc}") from exc
        return store

    async def close(self) -> None:
        await self._client.close()

    # Objects.

    async def get(self, kind: Kind, name: str) -> Versioned | None:
        key = kind.key(name)
        kv = await self.get_key(key)
        if kv is None:
            return None
        return Versioned(kind, key, decode(kind, kv.value), kv.mod_revision)

    async def list(self, kind: Kind) -> tuple[builtins.list[Versioned], int]:
        """All objects of one kind and the revision they were read at."""
        resp = await self._call(
            "list " + kind.prefix,
            lambda t: self._kv.get(kind.prefix, prefix_range_end(kind.prefix), timeout=t),
            whole=True,
        )
        items = [
            Versioned(kind, kv.key.decode(), decode(kind, kv.value), kv.mod_revision)
            for kv in resp.kvs
        ]
        return items, resp.header.revision

    async def snapshot(self) -> tuple[builtins.list[Versioned], int]:
        """Every object of every kind, read at one revision (the start of a watch)."""
        resp = await self._call(
            "snapshot",
            lambda t: self._kv.get(PREFIX, prefix_range_end(PREFIX), timeout=t),
            whole=True,
        )
        items = []
        for kv in resp.kvs:
            parsed = parse_key(kv.key.decode())
            if parsed:
                items.append(
                    Versioned(
                        parsed[0], kv.key.decode(), decode(parsed[0], kv.value), kv.mod_revision
                    )
                )
        return items, resp.header.revision

    async def watch(self, start_revision: int) -> AsyncIterator[EventBatch]:
        """Changes to every object from ``start_revision`` on, one batch per etcd watch
        response (empty when it changed no object). Raises StoreError when etcd compacted
        past ``start_revision``: the caller must take a new snapshot."""
        async for resp in self._watch(PREFIX, prefix_range_end(PREFIX), start_revision):
            events = []
            for ev in resp.events:
                key = ev.kv.key.decode()
                parsed = parse_key(key)
                if not parsed:
                    continue
                obj = None if ev.type == _DELETE else decode(parsed[0], ev.kv.value)
                events.append(Event(parsed[0], key, obj, ev.kv.mod_revision))
            if resp.events:
                yield EventBatch(events, max(ev.kv.mod_revision for ev in resp.events))

    async def commit(self, ops: Iterable[Op], *, fence: Fence | None = None) -> int:
        """Apply ``ops`` atomically. Returns the new revision. ConflictError when any
        guard failed (nothing was written); StoreError when etcd failed."""
        ops = list(ops)
        if not ops:
            return 0
        check_size(ops, fence)
        compares, requests = [], []
        if fence:
            compares.append(KVService.txn_compare_value(fence.key, fence.value))
        for op in ops:
            compare, request = self._op(op)
            compares.append(compare)
            if request is not None:
                requests.append(request)
        resp = await self._call("txn", lambda t: self._kv.txn(compares, requests, timeout=t))
        if not resp.succeeded:
            raise ConflictError(f"write lost a race ({describe(ops)})")
        return resp.header.revision

    async def revision(self) -> int:
        """etcd's current revision (what a view must reach to have seen every write so
        far)."""
        resp = await self._call("revision", lambda t: self._kv.get(PREFIX + "cluster", timeout=t))
        return resp.header.revision

    # Raw keys.

    async def get_key(self, key: str) -> KeyValue | None:
        """The key as stored (value, lease, revisions), or None."""
        resp = await self._call("get " + key, lambda t: self._kv.get(key, timeout=t))
        return _key_value(resp.kvs[0]) if resp.kvs else None

    async def put_key(self, key: str, value: bytes, *, lease: int = 0) -> int:
        resp = await self._call(
            "put " + key, lambda t: self._kv.put(key, value, lease=lease, timeout=t)
        )
        return resp.header.revision

    async def create_key(self, key: str, value: bytes, *, lease: int = 0) -> Created:
        resp = await self._call(
            "create " + key,
            lambda t: self._kv.txn(
                [KVService.txn_compare_create_revision(key, 0)],
                [KVService.txn_op_put(key, value, lease=lease)],
                [KVService.txn_op_get(key)],
                timeout=t,
            ),
        )
        if resp.succeeded:
            return Created(True, None, resp.header.revision)
        kvs = resp.responses[0].response_range.kvs
        return Created(False, _key_value(kvs[0]) if kvs else None, resp.header.revision)

    async def delete_key(self, key: str) -> int:
        resp = await self._call("delete " + key, lambda t: self._kv.delete(key, timeout=t))
        return resp.header.revision

    async def delete_prefix(self, prefix: str) -> int:
        resp = await self._call(
            "delete " + prefix,
            lambda t: self._kv.delete(prefix, prefix_range_end(prefix), timeout=t),
        )
        return resp.header.revision

    async def watch_key(self, key: str, start_revision: int) -> AsyncIterator[KeyEvent]:
        async for resp in self._watch(key, None, start_revision):
            for ev in resp.events:
                value = None if ev.type == _DELETE else bytes(ev.kv.value)
                yield KeyEvent(ev.kv.key.decode(), value, ev.kv.mod_revision)

    async def compact(self, revision: int) -> None:
        # physical: return once the history is gone, so a watch opened next sees it gone.
        await self._call(
            f"compact {revision}",
            lambda t: self._kv.compact(revision, physical=True, timeout=t),
        )

    # Leases.

    async def grant_lease(self, ttl: int) -> int:
        """A new etcd lease of ``ttl`` seconds; returns its id."""
        resp = await self._call(
            f"lease grant {ttl}s", lambda t: self._client.lease.grant(ttl, timeout=t)
        )
        return resp.ID

    async def put_leased(self, kind: Kind, obj: Message, lease: int) -> int:
        """Write ``obj`` unconditionally, attached to ``lease`` (it vanishes with it)."""
        return await self.put_key(kind.key_of(obj), encode(obj), lease=lease)

    async def keep_alive(self, lease: int) -> int:
        """Refresh ``lease`` once; returns its remaining TTL (<= 0: it has expired)."""
        try:
            call = self._client.lease.keep_alive(lease)
            try:
                async with asyncio.timeout(self._timeout):
                    async for answer in call:
                        return answer.TTL
                return 0
            finally:
                call.cancel()
        except (TimeoutError, EtcdError, grpc.aio.AioRpcError) as exc:
            detail = str(exc) or f"no answer within {self._timeout:g}s"
            raise StoreError(f"etcd keep-alive of lease {lease:x}: {detail}") from exc

    async def revoke_lease(self, lease: int) -> None:
        await self._call(
            f"lease revoke {lease:x}", lambda t: self._client.lease.revoke(lease, timeout=t)
        )

    # etcd.

    async def _watch(
        self, key: str, range_end: bytes | None, start_revision: int
    ) -> AsyncIterator[Any]:
        """etcd's watch responses with events; StoreError on compaction or failure."""
        stream = self._client.watch.watch(key, range_end, start_revision)
        try:
            async for resp in stream:
                if resp.compact_revision:
                    raise StoreError(
                        f"watch {key} from revision {start_revision}: compacted at revision "
                        f"{resp.compact_revision}"
                    )
                yield resp
        except (EtcdError, grpc.aio.AioRpcError) as exc:
            raise StoreError(f"watch {key}: {exc}") from exc
        finally:
            await stream.aclose()

    @staticmethod
    def _op(op: Op) -> tuple[Any, Any]:
        kv = KVService
        if isinstance(op, Unmodified):
            return _same_mod_revision(op.key, op.mod_revision), None
        if isinstance(op, QuietSince):
            prefix = op.kind.prefix
            return (
                Compare(
                    result=Compare.LESS,
                    target=Compare.MOD,
                    key=prefix.encode(),
                    range_end=prefix_range_end(prefix),
                    mod_revision=op.revision + 1,
                ),
                None,
            )
        if isinstance(op, Create):
            key = op_key(op)
            return kv.txn_compare_create_revision(key, 0), kv.txn_op_put(key, encode(op.obj))
        if isinstance(op, Update):
            key = op_key(op)
            return (
                _same_mod_revision(key, op.mod_revision),
                kv.txn_op_put(key, encode(op.obj), lease=op.lease),
            )
        return _same_mod_revision(op.key, op.mod_revision), kv.txn_op_delete(op.key)

    async def _call(
        self, what: str, call: Callable[[float], Awaitable[R]], *, whole: bool = False
    ) -> R:
        """``call(attempt_timeout)`` until it answers, for at most ``timeout`` seconds.
        Unanswered (timed out, or no member reachable) attempts are sent again; ``whole``
        gives one attempt all the time (reads of a whole folder, which may be slow and
        are not worth starting over). etcd's refusals are not retried."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        last: BaseException | None = None
        while (left := deadline - loop.time()) > 0:
            try:
                return await call(left if whole else min(left, self._attempt_timeout))
            except (TimeoutError, EtcdConnectionError, EtcdTransientError) as exc:
                last = exc
                if not isinstance(exc, TimeoutError):  # failed fast: do not spin
                    await asyncio.sleep(min(_RETRY_PAUSE, max(0.0, deadline - loop.time())))
            except (EtcdError, grpc.aio.AioRpcError) as exc:
                raise StoreError(f"etcd {what}: {exc}") from exc
        cause = f" ({last})" if last is not None and not isinstance(last, TimeoutError) else ""
        raise StoreError(f"etcd {what}: no answer within {self._timeout:g}s{cause}") from last


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(kv.key.decode(), bytes(kv.value), kv.create_revision, kv.mod_revision, kv.lease)


def _same_mod_revision(key: str, mod_revision: int) -> Compare:
    # etcd3aio has no helper for the MOD target; this is the guard of every update.
    return Compare(
        result=Compare.EQUAL, target=Compare.MOD, key=key.encode(), mod_revision=mod_revision
    )
