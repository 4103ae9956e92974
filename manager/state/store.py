"""The manager's only door to etcd: typed reads, guarded transactions and a watch.

Every object lives at ``/orch/v1/<kind>/<key>`` as protobuf JSON, so ``etcdctl get
--prefix /orch/`` reads like a document. Writes go through :meth:`Store.commit`, which
turns a list of operations into one etcd transaction: a create only succeeds if the key
is absent, an update or delete only if the key still has the ``mod_revision`` the caller
read. A lost race raises :class:`ConflictError`; the caller re-reads (its cache catches up
through the watch) and decides again. An optional fence compare (the leader key) rides
along in the same transaction, so a deposed leader cannot write.

etcd errors are translated to :class:`StoreError` here and nowhere else.

Every call is bounded: it answers or fails with StoreError within ``timeout`` (5 s),
also when etcd has lost quorum (etcd itself would keep a request waiting for 7 s, and our
client would retry it). Within that bound a call that got no answer is tried again, each
attempt at most ``attempt_timeout``: when the etcd leader dies, a request the followers
had forwarded to it is lost and would wait out the whole timeout, while the same request
sent again after the election (about 2 s) succeeds at once. The client spreads calls over
every endpoint (gRPC round robin over ``ipv4:a,b,c``) and skips a member that is down.
A retried transaction is still guarded: if the lost attempt did land after all, the retry
fails its compare and the caller sees a ConflictError, never a double write.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from etcd3aio import Etcd3Client, EtcdConnectionError, EtcdError, EtcdTransientError
from etcd3aio._protobuf import Compare
from etcd3aio.kv import KVService, prefix_range_end
from google.protobuf import json_format
from google.protobuf.message import Message

from orch.errors import ConflictError, StoreError
from orch.proto import objects_pb2

PREFIX = "/orch/v1/"
# etcd refuses transactions of more than 128 operations by default (--max-txn-ops).
MAX_TXN_OPS = 128
# Seconds before a call that failed at once (no member reachable) is sent again.
_RETRY_PAUSE = 0.2


class Kind(enum.Enum):
    """What is stored, and under which folder. Services and networks are keyed by name,
    tasks and nodes by id, address leases by ``<network>/<ip>`` and claims by
    ``<kind>/<value>`` (a value may hold '/' itself: ``subnet/10.10.0.0/24``)."""

    SERVICE = ("services", objects_pb2.Service)
    TASK = ("tasks", objects_pb2.Task)
    NODE = ("nodes", objects_pb2.Node)
    NETWORK = ("networks", objects_pb2.Network)
    LEASE = ("ipam", objects_pb2.AddressLease)
    CLAIM = ("claims", objects_pb2.Claim)
    LIVENESS = ("liveness", objects_pb2.Node)
    MANAGER = ("managers", objects_pb2.ManagerInfo)
    """A node's liveness record: a Node with only ``id`` and ``status`` (the manager
    holding the session), attached to an etcd lease the agent's heartbeats keep alive.
    The key disappears when the lease expires: that is how a node is seen to be gone."""

    def __init__(self, folder: str, message: type[Message]) -> None:
        self.folder = folder
        self.message = message

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.folder}/"

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def key_of(self, obj: Any) -> str:
        """The key an object is stored under: its name for services and networks."""
        if self in (Kind.SERVICE, Kind.NETWORK):
            return self.key(obj.spec.name)
        if self is Kind.LEASE:
            return self.key(f"{obj.network}/{obj.address}")
        if self is Kind.CLAIM:
            return self.key(f"{obj.kind}/{obj.value}")
        return self.key(obj.id)


_FOLDERS = {k.folder: k for k in Kind}

M = TypeVar("M", bound=Message)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Versioned(Generic[M]):
    """An object as read from etcd, with the revision a guarded write must compare."""

    kind: Kind
    key: str
    obj: M
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by the watch. ``obj`` is None for a delete."""

    kind: Kind
    key: str
    obj: Message | None
    mod_revision: int


class EventBatch(list[Event]):
    """The object events of one watch response, and ``revision``: the newest etcd revision
    in it. A response may change only keys that are not objects (the leader key, when the
    leadership moves), so a batch may be empty and still move its reader's revision on:
    else a reader waiting for etcd's current revision would wait for the next object
    write."""

    def __init__(self, events: list[Event], revision: int) -> None:
        super().__init__(events)
        self.revision = revision


# Operations for commit(). ``mod_revision`` is what the caller read; updates and deletes
# fail with ConflictError if the key changed since.
@dataclass(frozen=True, slots=True)
class Create:
    kind: Kind
    obj: Message


@dataclass(frozen=True, slots=True)
class Update:
    kind: Kind
    obj: Message
    mod_revision: int
    lease: int = 0
    """The etcd lease the key is attached to after the write (0: none). A put replaces
    the key's lease, so this moves a leased record onto another lease."""


@dataclass(frozen=True, slots=True)
class Delete:
    kind: Kind
    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Unmodified:
    """A guard without a write: ``key`` still has ``mod_revision`` (0: is still absent).
    Lets a write depend on an object it read but does not change (the network a new
    service joins)."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class QuietSince:
    """A guard without a write: no key of ``kind`` was created or changed after
    ``revision``. Decisions made over a whole folder (no two networks overlap) hold at
    commit time only if the folder did not move meanwhile. Deletions do not count."""

    kind: Kind
    revision: int


Op = Create | Update | Delete | Unmodified | QuietSince


def encode(obj: Message) -> bytes:
    return json_format.MessageToJson(obj, indent=None, sort_keys=True).encode()


def decode(kind: Kind, raw: bytes) -> Message:
    msg = kind.message()
    json_format.Parse(raw, msg, ignore_unknown_fields=True)
    return msg


def parse_key(key: str) -> tuple[Kind, str] | None:
    """``/orch/v1/tasks/abc`` -> (Kind.TASK, "abc"); None for keys that are not objects."""
    if not key.startswith(PREFIX):
        return None
    folder, _, name = key[len(PREFIX) :].partition("/")
    kind = _FOLDERS.get(folder)
    return (kind, name) if kind and name else None


@dataclass(frozen=True, slots=True)
class Fence:
    """A compare that must hold for a write to land: ``key`` still has ``value``."""

    key: str
    value: bytes


class Store:
    """Typed access to orch's etcd keyspace. One per manager process.

    ``timeout``: seconds any call may take before it fails with StoreError (the bound a
    user waits for an answer while etcd has no quorum). ``attempt_timeout``: seconds one
    attempt of a call waits before it is sent again, within ``timeout``; longer than any
    healthy call takes, shorter than an etcd leader election plus a retry."""

    def __init__(
        self, client: Etcd3Client, *, timeout: float = 5.0, attempt_timeout: float = 2.0
    ) -> None:
        self._client = client
        self._kv: KVService = client.kv
        self._timeout = timeout
        self._attempt_timeout = min(attempt_timeout, timeout)

    @property
    def client(self) -> Etcd3Client:
        return self._client

    @property
    def timeout(self) -> float:
        """Seconds a call may take before it fails with StoreError."""
        return self._timeout

    @classmethod
    async def connect(cls, endpoints: Sequence[str], *, timeout: float = 5.0) -> Store:
        """A Store on the etcd cluster at ``endpoints`` (all of them: calls go to any
        member that is up), once one linearizable read went through."""
        client = Etcd3Client(list(endpoints))
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

    async def get(self, kind: Kind, name: str) -> Versioned | None:
        key = kind.key(name)
        kv = await self.get_key(key)
        if kv is None:
            return None
        return Versioned(kind, key, decode(kind, kv.value), kv.mod_revision)

    async def get_key(self, key: str) -> Any | None:
        """The raw etcd KeyValue at ``key`` (value, lease, revisions), or None."""
        resp = await self._call("get " + key, lambda t: self._kv.get(key, timeout=t))
        return resp.kvs[0] if resp.kvs else None

    async def list(self, kind: Kind) -> tuple[list[Versioned], int]:
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

    async def snapshot(self) -> tuple[list[Versioned], int]:
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
        stream = self._client.watch.watch(PREFIX, prefix_range_end(PREFIX), start_revision)
        try:
            async for resp in stream:
                if resp.compact_revision:
                    raise StoreError(f"watch compacted at revision {resp.compact_revision}")
                events = []
                for ev in resp.events:
                    key = ev.kv.key.decode()
                    parsed = parse_key(key)
                    if not parsed:
                        continue
                    deleted = ev.type == 1  # mvccpb.Event.DELETE
                    obj = None if deleted else decode(parsed[0], ev.kv.value)
                    events.append(Event(parsed[0], key, obj, ev.kv.mod_revision))
                if resp.events:
                    yield EventBatch(events, max(ev.kv.mod_revision for ev in resp.events))
        except (EtcdError, grpc.aio.AioRpcError) as exc:
            raise StoreError(f"watch {PREFIX}: {exc}") from exc
        finally:
            await stream.aclose()

    async def commit(self, ops: Iterable[Op], *, fence: Fence | None = None) -> int:
        """Apply ``ops`` atomically. Returns the new revision. ConflictError when any
        guard failed (nothing was written); StoreError when etcd failed."""
        ops = list(ops)
        if not ops:
            return 0
        compares, requests = [], []
        if fence:
            compares.append(KVService.txn_compare_value(fence.key, fence.value))
        for op in ops:
            compare, request = self._op(op)
            compares.append(compare)
            if request is not None:
                requests.append(request)
        if len(compares) > MAX_TXN_OPS or len(requests) > MAX_TXN_OPS:
            raise ValueError(f"transaction of {len(compares)} operations exceeds {MAX_TXN_OPS}")
        resp = await self._call("txn", lambda t: self._kv.txn(compares, requests, timeout=t))
        if not resp.succeeded:
            what = ", ".join(_describe(op) for op in ops[:4]) + (" ..." if len(ops) > 4 else "")
            raise ConflictError(f"write lost a race ({what})")
        return resp.header.revision

    async def grant_lease(self, ttl: int) -> int:
        """A new etcd lease of ``ttl`` seconds; returns its id."""
        resp = await self._call(
            f"lease grant {ttl}s", lambda t: self._client.lease.grant(ttl, timeout=t)
        )
        return resp.ID

    async def put_leased(self, kind: Kind, obj: Message, lease: int) -> int:
        """Write ``obj`` unconditionally, attached to ``lease`` (it vanishes with it)."""
        key = kind.key_of(obj)
        resp = await self._call(
            "put " + key, lambda t: self._kv.put(key, encode(obj), lease=lease, timeout=t)
        )
        return resp.header.revision

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

    async def revision(self) -> int:
        """etcd's current revision (what a view must reach to have seen every write so
        far)."""
        resp = await self._call("revision", lambda t: self._kv.get(PREFIX + "cluster", timeout=t))
        return resp.header.revision

    async def commit_groups(
        self, groups: Sequence[Sequence[Op]], *, fence: Fence | None = None, size: int = 60
    ) -> None:
        """Commit groups of operations that must land together (a task and the address
        leases it takes), several groups per transaction up to ``size`` operations, never
        splitting a group. Like commit_chunked, the whole is not atomic; each group is."""
        batch: list[Op] = []
        for group in groups:
            if batch and len(batch) + len(group) > size:
                await self.commit(batch, fence=fence)
                batch = []
            batch.extend(group)
        if batch:
            await self.commit(batch, fence=fence)

    async def commit_chunked(
        self, ops: Sequence[Op], *, fence: Fence | None = None, size: int = 60
    ) -> None:
        """Commit a large plan in transactions of at most ``size`` operations. Each chunk
        is atomic; the plan as a whole is not, which is fine for control loops that
        reconcile again anyway."""
        for i in range(0, len(ops), size):
            await self.commit(ops[i : i + size], fence=fence)

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
            key = op.kind.key_of(op.obj)
            return kv.txn_compare_create_revision(key, 0), kv.txn_op_put(key, encode(op.obj))
        if isinstance(op, Update):
            key = op.kind.key_of(op.obj)
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


def _same_mod_revision(key: str, mod_revision: int) -> Compare:
    # etcd3aio has no helper for the MOD target; this is the guard of every update.
    return Compare(
        result=Compare.EQUAL, target=Compare.MOD, key=key.encode(), mod_revision=mod_revision
    )


def _describe(op: Op) -> str:
    if isinstance(op, Delete):
        return f"delete {op.key}"
    if isinstance(op, Unmodified):
        return f"unchanged {op.key}"
    if isinstance(op, QuietSince):
        return f"nothing new under {op.kind.prefix}"
    return f"{type(op).__name__.lower()} {op.kind.key_of(op.obj)}"
