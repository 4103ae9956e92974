"""An in-memory Store with etcd's semantics, for tests and simulations of the manager's
logic that are not about etcd itself.

What it shares with etcd (``tests/manager/test_store_contract.py`` runs the same tests on
both): one revision counter, moved once per transaction that changes something; per key a
``create_revision`` and a ``mod_revision``; guarded transactions that land whole or not at
all (ConflictError, nothing written); watches that start at any revision still in history
and see every later change in order; leases whose expiry deletes their keys in one
revision, seen by watches as deletes.

Time: leases run on a clock, by default a fake one that only :meth:`MemoryStore.advance`
moves (tests decide when a lease expires). An injected ``clock`` (seconds, e.g. a
simulator's virtual time) works too: due leases are expired at the next call of any
method, or by :meth:`MemoryStore.expire`.

Bounds: the history keeps the last ``history_limit`` revisions. A watch is a cursor into
that history, not a queue: a watch that falls so far behind that its next revision was
dropped fails with StoreError, as etcd fails a watch whose start revision it compacted,
and its reader takes a new snapshot (the ClusterView does). :meth:`compact` drops history
on demand. Pure asyncio; every method answers at once.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from orch.errors import ConflictError, StoreError
from orch.manager.state.api import (
    PREFIX,
    CommitBatches,
    Create,
    Created,
    Delete,
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

# Events one watch batch carries at most while a watcher catches up (a revision is never
# split), so one slow reader does not get the whole history in one list.
_BATCH_EVENTS = 1000


@dataclass
class _Lease:
    ttl: int
    expires_at: float
    keys: set[str] = field(default_factory=set)


# A write of one transaction: (key, value, lease); value None deletes.
_Write = tuple[str, bytes | None, int]


class MemoryStore(CommitBatches):
    """orch's keyspace in a dict, with etcd's revisions, transactions, leases and watch.

    ``clock``: seconds, for lease TTLs (default: a fake clock at 0 that ``advance``
    moves). ``history_limit``: revisions kept for watches (older ones are compacted).
    ``round_trip``: real seconds every call waits before it is served, as a request to
    etcd does; 0 still gives way to other tasks once. Tests of racing writers set a few
    milliseconds so that their decisions and commits interleave as they do on etcd."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        history_limit: int = 10_000,
        round_trip: float = 0.0,
    ) -> None:
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, not {history_limit}")
        self._fake_now = 0.0
        self._clock = clock
        self._history_limit = history_limit
        self._round_trip = round_trip
        self._keys: dict[str, KeyValue] = {}
        self._revision = 1  # etcd's revision of an empty store
        self._history: dict[int, tuple[KeyEvent, ...]] = {}
        self._compacted = 1  # watches may start at this revision or later
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x1000)
        self._changed = asyncio.Event()  # replaced at every new revision
        self._closed = False
        self.conflicts = 0
        """Commits that lost a race so far: a test of concurrent writers can check that
        they did race."""

    # Time.

    def now(self) -> float:
        return self._clock() if self._clock else self._fake_now

    def advance(self, seconds: float) -> int:
        """Move the fake clock on and expire the leases now due; returns how many."""
        if self._clock:
            raise RuntimeError("advance() moves the fake clock; this store has a clock")
        if seconds < 0:
            raise ValueError(f"time does not go back ({seconds}s)")
        self._fake_now += seconds
        return self.expire()

    def expire(self) -> int:
        """Revoke every lease whose TTL ran out (each in its own revision, as etcd's
        lessor does); returns how many."""
        now = self.now()
        due = sorted(
            (le.expires_at, lid) for lid, le in self._leases.items() if le.expires_at <= now
        )
        for _, lid in due:
            self._revoke(lid)
        return len(due)

    # Objects.

    async def close(self) -> None:
        self._closed = True
        self._wake()

    async def get(self, kind: Kind, name: str) -> Versioned | None:
        kv = await self.get_key(kind.key(name))
        return None if kv is None else _versioned(kind, kv)

    async def list(self, kind: Kind) -> tuple[builtins.list[Versioned], int]:
        await self._enter()
        items = [_versioned(kind, kv) for kv in self._range(kind.prefix)]
        return items, self._revision

    async def snapshot(self) -> tuple[builtins.list[Versioned], int]:
        await self._enter()
        items = []
        for kv in self._range(PREFIX):
            parsed = parse_key(kv.key)
            if parsed:
                items.append(_versioned(parsed[0], kv))
        return items, self._revision

    async def watch(self, start_revision: int) -> AsyncIterator[EventBatch]:
        async for events in self._follow(lambda key: key.startswith(PREFIX), start_revision):
            batch = []
            for ev in events:
                parsed = parse_key(ev.key)
                if parsed:
                    obj = None if ev.value is None else decode(parsed[0], ev.value)
                    batch.append(Event(parsed[0], ev.key, obj, ev.mod_revision))
            yield EventBatch(batch, events[-1].mod_revision)

    async def commit(self, ops: Iterable[Op], *, fence: Fence | None = None) -> int:
        ops = list(ops)
        if not ops:
            return 0
        await self._enter()
        check_size(ops, fence)
        writes = [_write(op) for op in ops if not isinstance(op, Unmodified | QuietSince)]
        _check_unique(writes)
        if not self._holds(ops, fence):
            self.conflicts += 1
            raise ConflictError(f"write lost a race ({describe(ops)})")
        self._check_leases(writes)  # etcd checks them only once the guards held
        return self._apply(writes)

    async def revision(self) -> int:
        await self._enter()
        return self._revision

    # Raw keys.

    async def get_key(self, key: str) -> KeyValue | None:
        await self._enter()
        return self._keys.get(key)

    async def put_key(self, key: str, value: bytes, *, lease: int = 0) -> int:
        await self._enter()
        self._check_leases([(key, value, lease)])
        return self._apply([(key, value, lease)])

    async def create_key(self, key: str, value: bytes, *, lease: int = 0) -> Created:
        await self._enter()
        holder = self._keys.get(key)
        if holder is not None:
            return Created(False, holder, self._revision)
        self._check_leases([(key, value, lease)])
        return Created(True, None, self._apply([(key, value, lease)]))

    async def delete_key(self, key: str) -> int:
        await self._enter()
        return self._apply([(key, None, 0)])

    async def delete_prefix(self, prefix: str) -> int:
        await self._enter()
        return self._apply([(kv.key, None, 0) for kv in self._range(prefix)])

    async def watch_key(self, key: str, start_revision: int) -> AsyncIterator[KeyEvent]:
        async for events in self._follow(lambda k: k == key, start_revision):
            for ev in events:
                yield ev

    async def compact(self, revision: int) -> None:
        await self._enter()
        if revision > self._revision:
            raise StoreError(
                f"compact {revision}: a future revision (the current one is {self._revision})"
            )
        if revision <= self._compacted:
            raise StoreError(f"compact {revision}: already compacted at {self._compacted}")
        self._drop_history(revision)

    # Leases.

    async def grant_lease(self, ttl: int) -> int:
        await self._enter()
        lease = next(self._lease_ids)
        self._leases[lease] = _Lease(ttl, self.now() + ttl)
        return lease

    async def keep_alive(self, lease: int) -> int:
        await self._enter()
        found = self._leases.get(lease)
        if found is None:
            return 0  # etcd answers a keep-alive of an unknown lease with TTL 0
        found.expires_at = self.now() + found.ttl
        return found.ttl

    async def revoke_lease(self, lease: int) -> None:
        await self._enter()
        if lease not in self._leases:
            raise StoreError(f"lease revoke {lease:x}: lease not found")
        self._revoke(lease)

    async def put_leased(self, kind: Kind, obj: Message, lease: int) -> int:
        return await self.put_key(kind.key_of(obj), encode(obj), lease=lease)

    # The core: every change goes through _apply.

    async def _enter(self) -> None:
        """What every call does first: give way to other tasks, as a request on its way
        to etcd does (a decision and its commit are not atomic in a real manager either,
        so races between loops happen here too); refuse when closed; expire what is due."""
        await asyncio.sleep(self._round_trip)
        if self._closed:
            raise StoreError("memory store: closed")
        self.expire()

    def _range(self, prefix: str) -> builtins.list[KeyValue]:
        return sorted((kv for k, kv in self._keys.items() if k.startswith(prefix)), key=_by_key)

    def _check_leases(self, writes: builtins.list[_Write]) -> None:
        """StoreError, as from etcd, for a put on a lease that does not exist."""
        for key, value, lease in writes:
            if value is not None and lease and lease not in self._leases:
                raise StoreError(f"put {key}: lease {lease:x} not found")

    def _holds(self, ops: builtins.list[Op], fence: Fence | None) -> bool:
        if fence:
            current = self._keys.get(fence.key)
            if current is None or current.value != fence.value:
                return False
        return all(self._guard(op) for op in ops)

    def _guard(self, op: Op) -> bool:
        if isinstance(op, QuietSince):
            return all(kv.mod_revision <= op.revision for kv in self._range(op.kind.prefix))
        if isinstance(op, Create):
            return op_key(op) not in self._keys
        key = op.key if isinstance(op, Delete | Unmodified) else op_key(op)
        current = self._keys.get(key)
        return (current.mod_revision if current else 0) == op.mod_revision

    def _apply(self, writes: builtins.list[_Write]) -> int:
        """Write ``writes`` at one new revision (none if nothing changes, like etcd: a
        delete of an absent key is not a change); returns the current revision."""
        revision = self._revision + 1
        events = []
        for key, value, lease in writes:
            old = self._keys.get(key)
            if old is not None and old.lease in self._leases:
                self._leases[old.lease].keys.discard(key)
            if value is None:
                if old is not None:
                    del self._keys[key]
                    events.append(KeyEvent(key, None, revision))
                continue
            created = old.create_revision if old else revision
            self._keys[key] = KeyValue(key, value, created, revision, lease)
            if lease:
                self._leases[lease].keys.add(key)
            events.append(KeyEvent(key, value, revision))
        if events:
            self._revision = revision
            self._history[revision] = tuple(events)
            if len(self._history) > self._history_limit:
                self._drop_history(revision - self._history_limit + 1)
            self._wake()
        return self._revision

    def _revoke(self, lease: int) -> None:
        keys = self._leases.pop(lease).keys
        self._apply([(key, None, 0) for key in sorted(keys)])

    def _drop_history(self, before: int) -> None:
        for revision in range(self._compacted, before):
            self._history.pop(revision, None)
        self._compacted = max(self._compacted, before)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _follow(
        self, wanted: Callable[[str], bool], start_revision: int
    ) -> AsyncIterator[builtins.list[KeyEvent]]:
        """The events of ``wanted`` keys from ``start_revision`` on (0: from now), a list
        per step, read from the history as the watcher's cursor moves on."""
        await self._enter()
        cursor = start_revision if start_revision > 0 else self._revision + 1
        while True:
            if self._closed:
                raise StoreError("watch: the memory store was closed")
            if cursor < self._compacted:
                raise StoreError(
                    f"watch from revision {cursor}: compacted at revision {self._compacted}"
                )
            if cursor > self._revision:
                await self._changed.wait()
                continue
            events: builtins.list[KeyEvent] = []
            while cursor <= self._revision and len(events) < _BATCH_EVENTS:
                events.extend(ev for ev in self._history.get(cursor, ()) if wanted(ev.key))
                cursor += 1
            if events:
                yield events


def _check_unique(writes: list[_Write]) -> None:
    """StoreError, as from etcd, for a key written twice in one transaction."""
    keys = [key for key, _, _ in writes]
    if len(keys) != len(set(keys)):
        raise StoreError(f"txn: duplicate key given in txn request ({', '.join(keys[:4])})")


def _write(op: Create | Update | Delete) -> _Write:
    if isinstance(op, Delete):
        return (op.key, None, 0)
    return (op_key(op), encode(op.obj), op.lease if isinstance(op, Update) else 0)


def _versioned(kind: Kind, kv: KeyValue) -> Versioned:
    return Versioned(kind, kv.key, decode(kind, kv.value), kv.mod_revision)


def _by_key(kv: KeyValue) -> str:
    return kv.key
