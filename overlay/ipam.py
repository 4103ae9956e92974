"""Host-local IPAM: hand out addresses of one subnet to owners, and keep them across restarts.

``Pool`` is the pure core: which address each owner holds, and the next-fit cursor. It
skips the network address, the broadcast address and the gateway. Allocation is next-fit
(scan onward from the last address handed out, wrapping), like Docker's IPAM: a released
address is reused only after the rest of the pool was used, so a peer's stale neighbour
entry for it is unlikely to point at a new container.

``IpamStore`` is the thin file shell: one JSON file per network under the agent's state
dir, replaced atomically (temp file, rename) after each change, so an agent restart keeps
every allocation and readers never see a torn file. Each owner (an endpoint id) holds at
most one address per pool; allocating twice returns the same one.

No fsync (it cost a disk flush per container start and stop, on the event loop): a
process crash loses nothing, since the page cache survives it. Only a machine crash can
leave the file old or torn, and then every container holding an address died with that
boot. An old file is harmless (sweep releases owners no record claims); a torn one
written before the current boot is discarded with a warning. A torn file written in
this boot cannot come from us and is still refused.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from orch.errors import NetworkError

log = logging.getLogger(__name__)

IPv4 = ipaddress.IPv4Address


@dataclass
class Pool:
    """Addresses of ``subnet`` allocated to owners. Pure: no IO."""

    subnet: ipaddress.IPv4Network
    gateway: IPv4
    allocations: dict[IPv4, str] = field(default_factory=dict)
    cursor: IPv4 | None = None
    """Last address handed out; the next search starts after it."""

    @classmethod
    def for_subnet(cls, subnet: str, gateway: str | None = None) -> Pool:
        """A fresh pool; the gateway defaults to the first host address."""
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise NetworkError(f"bad subnet {subnet!r}: {exc}") from exc
        if net.prefixlen > 30:
            raise NetworkError(f"subnet {net} is too small: want a /30 or larger")
        gw = IPv4(gateway) if gateway else net.network_address + 1
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise NetworkError(f"gateway {gw} is not a host address of {net}")
        return cls(subnet=net, gateway=gw)

    @property
    def capacity(self) -> int:
        """How many addresses the pool can hand out."""
        return self.subnet.num_addresses - 3

    def usable(self, address: IPv4) -> bool:
        """True if ``address`` may be handed out at all."""
        return (
            address in self.subnet
            and address != self.subnet.network_address
            and address != self.subnet.broadcast_address
            and address != self.gateway
        )

    def address_of(self, owner: str) -> IPv4 | None:
        """The address ``owner`` holds, if any."""
        for address, who in self.allocations.items():
            if who == owner:
                return address
        return None

    def owners(self) -> set[str]:
        """Every owner holding an address."""
        return set(self.allocations.values())

    def _candidates(self) -> Iterator[IPv4]:
        first = int(self.subnet.network_address) + 1
        last = int(self.subnet.broadcast_address) - 1
        start = int(self.cursor) + 1 if self.cursor is not None else first
        if not first <= start <= last:
            start = first
        for value in range(start, last + 1):
            yield IPv4(value)
        for value in range(first, start):
            yield IPv4(value)

    def allocate(self, owner: str) -> IPv4:
        """Give ``owner`` an address (the one it holds already, if any)."""
        held = self.address_of(owner)
        if held is not None:
            return held
        if len(self.allocations) < self.capacity:
            for address in self._candidates():
                if address != self.gateway and address not in self.allocations:
                    self.allocations[address] = owner
                    self.cursor = address
                    return address
        raise NetworkError(
            f"address pool {self.subnet} exhausted: all {self.capacity} addresses are allocated"
        )

    def reserve(self, owner: str, address: IPv4 | str) -> IPv4:
        """Record that ``owner`` holds ``address`` (an address allocated elsewhere, or
        one re-adopted after a restart). Idempotent; conflicting owners raise."""
        addr = IPv4(str(address).split("/")[0])
        if not self.usable(addr):
            raise NetworkError(f"address {addr} is not usable in {self.subnet}")
        holder = self.allocations.get(addr)
        if holder is not None and holder != owner:
            raise NetworkError(f"address {addr} in {self.subnet} is held by {holder}, not {owner}")
        held = self.address_of(owner)
        if held is not None and held != addr:
            raise NetworkError(f"{owner} already holds {held} in {self.subnet}, not {addr}")
        self.allocations[addr] = owner
        return addr

    def release(self, owner: str) -> IPv4 | None:
        """Free the address ``owner`` holds; returns it (None if it held none)."""
        held = self.address_of(owner)
        if held is not None:
            del self.allocations[held]
        return held

    def to_json(self) -> dict[str, object]:
        return {
            "subnet": str(self.subnet),
            "gateway": str(self.gateway),
            "cursor": str(self.cursor) if self.cursor is not None else None,
            "allocations": {str(a): o for a, o in sorted(self.allocations.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Pool:
        pool = cls.for_subnet(str(data["subnet"]), str(data["gateway"]))
        cursor = data.get("cursor")
        pool.cursor = IPv4(str(cursor)) if cursor else None
        allocations = data.get("allocations") or {}
        if not isinstance(allocations, dict):
            raise ValueError("allocations is not an object")
        for address, owner in allocations.items():
            pool.reserve(str(owner), address)
        return pool


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` so readers see the old or the new file, whole.

    Not fsync'ed: durable across a process crash, not a machine crash (see the module
    docstring for why that is enough for network state).
    """
    text = (
        json.dumps(data, sort_keys=True) + "\n"
    )  # no indent: that is the slow pure-Python encoder
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@functools.lru_cache(maxsize=1)
def boot_time() -> float:
    """When this machine booted (seconds since the epoch), from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise NetworkError("/proc/stat has no btime line")


def written_before_boot(path: Path) -> bool:
    """True if ``path`` was last modified before this machine booted."""
    try:
        return path.stat().st_mtime < boot_time()
    except OSError:
        return False


class IpamStore:
    """A ``Pool`` persisted in one JSON file. Every change is written before it returns.

    Opening a file made for another subnet fails unless it holds no allocations (then the
    pool starts over on the new subnet): silently dropping live allocations would hand
    out addresses that containers still use.
    """

    def __init__(self, path: Path, subnet: str, gateway: str | None = None) -> None:
        self.path = Path(path)
        fresh = Pool.for_subnet(subnet, gateway)
        loaded = self._load()
        if loaded is not None and (loaded.subnet, loaded.gateway) != (fresh.subnet, fresh.gateway):
            if loaded.allocations:
                raise NetworkError(
                    f"IPAM file {self.path} is for {loaded.subnet} (gateway {loaded.gateway}) "
                    f"with {len(loaded.allocations)} allocations, not {fresh.subnet}; "
                    "remove its endpoints first"
                )
            loaded = None
        self.pool = loaded or fresh

    def _load(self) -> Pool | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return Pool.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, NetworkError) as exc:
            if written_before_boot(self.path):
                log.warning(
                    "IPAM file %s is torn (%s) and predates this boot: a machine crash; "
                    "its allocations died with that boot, starting empty",
                    self.path,
                    exc,
                )
                return None
            raise NetworkError(f"IPAM file {self.path} is corrupt: {exc}") from exc

    def _save(self) -> None:
        try:
            write_json_atomic(self.path, self.pool.to_json())
        except OSError as exc:
            raise NetworkError(f"cannot write IPAM file {self.path}: {exc}") from exc

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.pool.subnet

    @property
    def gateway(self) -> IPv4:
        return self.pool.gateway

    def address_of(self, owner: str) -> IPv4 | None:
        return self.pool.address_of(owner)

    def owners(self) -> set[str]:
        return self.pool.owners()

    def allocate(self, owner: str) -> IPv4:
        """Allocate (or return the held) address of ``owner``, persisted."""
        before = self.pool.address_of(owner)
        address = self.pool.allocate(owner)
        if before is None:
            self._save()
        return address

    def reserve(self, owner: str, address: IPv4 | str) -> IPv4:
        """Record a known address of ``owner``, persisted."""
        before = self.pool.address_of(owner)
        result = self.pool.reserve(owner, address)
        if before is None:
            self._save()
        return result

    def release(self, owner: str) -> IPv4 | None:
        """Free ``owner``'s address, persisted. Safe to call twice."""
        address = self.pool.release(owner)
        if address is not None:
            self._save()
        return address
