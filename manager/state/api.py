"""What every store offers: orch's keyspace, the operations of a commit, and the Store
protocol that the etcd store (``store.EtcdStore``) and the in-memory store
(``memstore.MemoryStore``) both implement with the same semantics.

The semantics are etcd's, because etcd is what runs: one global revision that every
write moves on; per key a ``create_revision`` and a ``mod_revision``; a transaction of
compares and writes that lands whole at one revision or not at all; leases with a TTL
whose expiry deletes their keys; a watch that can start at a past revision until history
is compacted. ``tests/manager/test_store_contract.py`` holds both implementations to it.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from orch.proto import objects_pb2

PREFIX = "/orch/v1/"
# etcd refuses transactions of more than 128 operations by default (--max-txn-ops).
MAX_TXN_OPS = 128
# Removed nodes whose certificates are still refused (Kind.DENIED); `orch node rm` is
# refused beyond it until entries expire. Every manager checks the list on every call.
MAX_DENIED = 10_000


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
    """A node's liveness record: a Node with only ``id`` and ``status`` (the manager
    holding the session), attached to an etcd lease the agent's heartbeats keep alive.
    The key disappears when the lease expires: that is how a node is seen to be gone."""
    MANAGER = ("managers", objects_pb2.ManagerInfo)
    """A manager's presence, on its own lease (`orch managers`)."""
    DENIED = ("denied", objects_pb2.DeniedNode)
    """A removed node whose certificates are refused (manager/authz.py), on a lease that
    ends when its last certificate has expired. At most ``MAX_DENIED`` at a time."""

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


@dataclass(frozen=True, slots=True)
class Versioned(Generic[M]):
    """An object as read from the store, with the revision a guarded write must compare."""

    kind: Kind
    key: str
    obj: M
    mod_revision: int


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A raw key as stored (any key, not only objects): what etcd's KeyValue holds."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0
    """The lease the key is attached to (0: none)."""


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One change of one raw key, seen by :meth:`Store.watch_key`."""

    key: str
    value: bytes | None
    """None for a delete (also a delete by lease expiry)."""
    mod_revision: int
    """The revision of the change."""

    @property
    def deleted(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True)
class Created:
    """The answer of :meth:`Store.create_key`: whether the key was created, else who
    holds it; ``revision`` is the store's revision after the call."""

    created: bool
    holder: KeyValue | None
    revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by the watch. ``obj`` is None for a delete."""

    kind: Kind
    key: str
    obj: Message | None
    mod_revision: int


class EventBatch(list[Event]):
    """The object events of one watch response, and ``revision``: the newest revision in
    it. A response may change only keys that are not objects (the leader key, when the
    leadership moves), so a batch may be empty and still move its reader's revision on:
    else a reader waiting for the store's current revision would wait for the next
    object write."""

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
    """The lease the key is attached to after the write (0: none). A put replaces the
    key's lease, so this moves a leased record onto another lease."""


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


@dataclass(frozen=True, slots=True)
class Fence:
    """A compare that must hold for a write to land: ``key`` still has ``value`` (a
    missing key fails it, as in etcd)."""

    key: str
    value: bytes


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


def op_key(op: Create | Update) -> str:
    return op.kind.key_of(op.obj)


def describe(ops: Sequence[Op]) -> str:
    """The first operations of a transaction, for the message of a lost race."""

    def one(op: Op) -> str:
        if isinstance(op, Delete):
            return f"delete {op.key}"
        if isinstance(op, Unmodified):
            return f"unchanged {op.key}"
        if isinstance(op, QuietSince):
            return f"nothing new under {op.kind.prefix}"
        return f"{type(op).__name__.lower()} {op_key(op)}"

    return ", ".join(one(op) for op in ops[:4]) + (" ..." if len(ops) > 4 else "")


def check_size(ops: Sequence[Op], fence: Fence | None) -> None:
    """ValueError for a transaction etcd would refuse: more than MAX_TXN_OPS compares
    (one per operation, plus the fence) or writes."""
    compares = len(ops) + (1 if fence else 0)
    writes = sum(1 for op in ops if isinstance(op, Create | Update | Delete))
    if compares > MAX_TXN_OPS or writes > MAX_TXN_OPS:
        raise ValueError(f"transaction of {compares} operations exceeds {MAX_TXN_OPS}")


class Store(Protocol):
    """orch's keyspace behind guarded transactions, a watch and leases. Every method
    raises StoreError when the store cannot answer (with what was asked), and commit
    raises ConflictError when a guard failed (nothing was written)."""

    async def close(self) -> None: ...

    # Objects.

    async def get(self, kind: Kind, name: str) -> Versioned | None: ...

    async def list(self, kind: Kind) -> tuple[builtins.list[Versioned], int]:
        """All objects of one kind, sorted by key, and the revision they were read at."""
        ...

    async def snapshot(self) -> tuple[builtins.list[Versioned], int]:
        """Every object of every kind, read at one revision (the start of a watch)."""
        ...

    def watch(self, start_revision: int) -> AsyncIterator[EventBatch]:
        """Changes of every key under PREFIX from ``start_revision`` on, in revision
        order. Raises StoreError when history was compacted past ``start_revision`` (or
        the reader fell that far behind): the caller must take a new snapshot."""
        ...

    async def commit(self, ops: Iterable[Op], *, fence: Fence | None = None) -> int:
        """Apply ``ops`` atomically; returns the new revision (0 for no ops)."""
        ...

    async def commit_groups(
        self, groups: Sequence[Sequence[Op]], *, fence: Fence | None = None, size: int = 60
    ) -> None: ...

    async def commit_chunked(
        self, ops: Sequence[Op], *, fence: Fence | None = None, size: int = 60
    ) -> None: ...

    async def revision(self) -> int:
        """The store's current revision (what a view must reach to have seen every
        write so far)."""
        ...

    # Raw keys: the leader key, and what tests and tools need.

    async def get_key(self, key: str) -> KeyValue | None: ...

    async def put_key(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write ``key`` unconditionally; returns the new revision."""
        ...

    async def create_key(self, key: str, value: bytes, *, lease: int = 0) -> Created:
        """Write ``key`` only if it is absent."""
        ...

    async def delete_key(self, key: str) -> int:
        """Delete ``key`` unconditionally (absent: nothing happens); returns the
        revision."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` in one revision; returns the revision."""
        ...

    def watch_key(self, key: str, start_revision: int) -> AsyncIterator[KeyEvent]:
        """Changes of one key from ``start_revision`` on; StoreError when compacted."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision``: a watch from before it fails."""
        ...

    # Leases.

    async def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; returns its id."""
        ...

    async def keep_alive(self, lease: int) -> int:
        """Refresh ``lease`` once; returns its TTL from now (<= 0: it has expired)."""
        ...

    async def revoke_lease(self, lease: int) -> None:
        """End ``lease`` now, deleting its keys; StoreError if it does not exist."""
        ...

    async def put_leased(self, kind: Kind, obj: Message, lease: int) -> int:
        """Write ``obj`` unconditionally, attached to ``lease`` (it vanishes with it)."""
        ...


class CommitBatches:
    """commit_groups and commit_chunked, for any store with ``commit``."""

    async def commit(self, ops: Iterable[Op], *, fence: Fence | None = None) -> int:
        raise NotImplementedError

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
