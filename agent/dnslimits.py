"""The DNS resolver's limits, as pure bookkeeping: per-source token buckets in a bounded
table, and counters of work in flight with a total and a per-key cap. No sockets, no
clock of their own (the caller passes ``now``), so the tests drive them on fake time.

Why these shapes: a resolver reachable from a network must not let one asker take all of
it. A token bucket per source address bounds the rate (a burst, then ``rate`` per second);
the table of buckets is bounded too (a flood from many spoofed sources would otherwise
grow it without end): when full, the bucket least recently seen is dropped, which at worst
gives a returning source a fresh burst. Work that outlives the packet (a forwarded query,
a TCP session) holds a slot of an ``InFlight`` counter, capped in total and per key, so
what a flood can hold (sockets, tasks, memory) has a fixed ceiling; what does not get a
slot is dropped or refused by the caller, never queued.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class RateLimiter:
    """A token bucket per key (a source address): ``burst`` tokens at first, refilled at
    ``rate`` per second; one query costs one token. At most ``max_keys`` buckets."""

    def __init__(self, *, rate: float, burst: float, max_keys: int) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError(f"rate {rate}, burst {burst}, max_keys {max_keys}: must be positive")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()
        """key -> [tokens, when last refilled]; least recently seen first."""

    def allow(self, key: Hashable, now: float) -> bool:
        """Take a token for ``key`` at time ``now``; False when its bucket is empty."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = [self.burst, now]
        else:
            self._buckets.move_to_end(key)
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
                bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True

    def __len__(self) -> int:
        return len(self._buckets)


class InFlight:
    """Slots of work in flight: at most ``total`` at once, at most ``per_key`` per key.
    ``acquire`` either takes a slot (True) or changes nothing (False); every True is
    paired with one ``release`` of the same key."""

    def __init__(self, *, total: int, per_key: int) -> None:
        if total < 1 or per_key < 1:
            raise ValueError(f"total {total}, per_key {per_key}: must be positive")
        self.total = total
        self.per_key = per_key
        self._count = 0
        self._by_key: dict[Hashable, int] = {}

    def acquire(self, key: Hashable) -> bool:
        held = self._by_key.get(key, 0)
        if self._count >= self.total or held >= self.per_key:
            return False
        self._count += 1
        self._by_key[key] = held + 1
        return True

    def release(self, key: Hashable) -> None:
        held = self._by_key.get(key, 0)
        if held <= 0:
            raise ValueError(f"release of {key!r} without a slot")
        self._count -= 1
        if held == 1:
            del self._by_key[key]  # the table holds only keys with work in flight
        else:
            self._by_key[key] = held - 1

    def __len__(self) -> int:
        return self._count

    def keys(self) -> int:
        return len(self._by_key)
