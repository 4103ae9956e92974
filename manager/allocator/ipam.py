"""Cluster IPAM, the pure core: VNIs and subnets for new networks, and one address per
task per overlay network, decided over a snapshot of networks, tasks and leases.

Why pure: the allocator loop (loop.py) and the Control API call these functions
on their ClusterView and commit the result in etcd transactions that make each decision
safe on its own: an address is taken by creating ``/orch/v1/ipam/<network>/<ip>`` only if
absent, in the same transaction as the task update that records it; a VNI or pool subnet
by creating ``/orch/v1/claims/<kind>/<value>`` only if absent. Two allocators deciding on
the same snapshot therefore cannot both win; the loser plans again on newer state. So this
module only has to be right about one snapshot, which the tests check with hypothesis.

The rules:

* An address is never the subnet's network address, its gateway (the first address) or
  its broadcast address; the lowest free one is given.
* A task holds an address from when the allocator records it (NEW -> PENDING) until the
  task is terminal or deleted; then its lease is released. Terminal tasks stay as slot
  history for a while, and holding their addresses would exhaust a /24 after ~40 slots.
* A task gets addresses on all its overlay networks at once or on none of them. One that
  cannot (a network full or missing) stays NEW, with the reason in status.err; tasks on
  built-in networks only (bridge, host, none) need no address and move on at once.
* MAC addresses are derived from the IP (``model.mac_for``, Docker's rule), so an address
  always comes with the same MAC and stale neighbour entries cannot mislead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from orch import model
from orch.errors import ValidationError
from orch.proto import objects_pb2, types_pb2


@dataclass(frozen=True)
class IpamSettings:
    """Where network subnets and VNIs come from."""

    address_pool: str = "10.10.0.0/16"
    """Subnets of networks created without one are cut from this range."""
    subnet_prefix: int = 24
    """Prefix length of the subnets cut from the pool (/24: 253 tasks per network)."""
    vni_min: int = 4096
    """Lowest VXLAN network identifier given to a network (below: room for static ones)."""
    vni_max: int = 16_777_215
    """Highest VNI (VXLAN has 24 bits)."""
    bridge_subnets: tuple[str, ...] = ("10.213.0.0/16",)
    """The agents' local bridge subnets, which no network may overlap: every agent's
    default is 10.213.0.0/24, and agents sharing a netns take 10.213.<i>.0/24
    (overlay/settings.py, ``bridge_subnet_for``)."""


# -- addresses --------------------------------------------------------------------------


def gateway_of(subnet: str) -> str:
    """The first address of the subnet: the network's gateway, never given to a task."""
    return str(ipaddress.IPv4Network(subnet).network_address + 1)


def usable_range(subnet: ipaddress.IPv4Network) -> range:
    """Integer addresses a task may get: after network and gateway, before broadcast."""
    first = int(subnet.network_address) + 2
    last = int(subnet.broadcast_address) - 1
    return range(first, last + 1)


# -- networks ---------------------------------------------------------------------------


def next_vni(taken: Iterable[int], settings: IpamSettings) -> int:
    """The lowest VNI of the settings' range not in ``taken``."""
    used = set(taken)
    for vni in range(settings.vni_min, settings.vni_max + 1):
        if vni not in used:
            return vni
    raise ValidationError(f"no free VNI left in {settings.vni_min}..{settings.vni_max}")


def next_subnet(
    taken: Iterable[ipaddress.IPv4Network], settings: IpamSettings
) -> ipaddress.IPv4Network:
    """The first subnet of the pool (at the settings' prefix) overlapping none of ``taken``."""
    pool = ipaddress.IPv4Network(settings.address_pool)
    used = list(taken)
    count = 0
    for candidate in pool.subnets(new_prefix=settings.subnet_prefix):
        count += 1
        if not any(candidate.overlaps(t) for t in used):
            return candidate
    raise ValidationError(
        f"no free /{settings.subnet_prefix} left in the address pool {pool} "
        f"({count} subnets, all taken); give the network a subnet"
    )


# -- task allocation --------------------------------------------------------------------


@dataclass
class Allocation:
    """Addresses for one task: its attachments (in the order of Task.networks) and the
    leases to create with them."""

    task_id: str
    attachments: list[objects_pb2.NetworkAttachment]
    leases: list[objects_pb2.AddressLease]


@dataclass
class Unallocated:
    """A task that cannot get its addresses now, and why."""

    task_id: str
    reason: str


@dataclass
class AllocationPlan:
    allocated: list[Allocation] = field(default_factory=list)
    waiting: list[Unallocated] = field(default_factory=list)
    release: list[str] = field(default_factory=list)
    """Lease names ("<network>/<ip>") whose task is terminal or gone."""

    @property
    def empty(self) -> bool:
        return not (self.allocated or self.waiting or self.release)


def lease_name(lease: objects_pb2.AddressLease) -> str:
    return f"{lease.network}/{lease.address}"


def needs_allocation(task: objects_pb2.Task) -> bool:
    """NEW, desired RUNNING and not placed: the allocator's input."""
    return (
        task.status.state == types_pb2.NEW
        and task.desired_state == types_pb2.RUNNING
        and not task.node_id
    )


def allocated(task: objects_pb2.Task, allocation: Allocation, now: datetime) -> objects_pb2.Task:
    """``task`` with its addresses: the attachments recorded, state PENDING (the scheduler's
    input), any earlier reason cleared."""
    stamp = model.timestamp(now)
    out = objects_pb2.Task()
    out.CopyFrom(task)
    del out.attachments[:]
    out.attachments.extend(allocation.attachments)
    out.status.CopyFrom(
        objects_pb2.TaskStatus(state=types_pb2.PENDING, timestamp=stamp, message="allocated")
    )
    out.meta.updated_at.CopyFrom(stamp)
    return out


WAITING_MESSAGE = "waiting for an address"


def unallocated(
    task: objects_pb2.Task, waiting: Unallocated, now: datetime
) -> objects_pb2.Task | None:
    """``task`` left NEW with the reason; None when it already says so (so the loop does
    not feed itself)."""
    if task.status.err == waiting.reason:
        return None
    stamp = model.timestamp(now)
    out = objects_pb2.Task()
    out.CopyFrom(task)
    out.status.err = waiting.reason
    out.status.message = WAITING_MESSAGE
    out.status.timestamp.CopyFrom(stamp)
    out.meta.updated_at.CopyFrom(stamp)
    return out


def holds_addresses(task: objects_pb2.Task | None) -> bool:
    """A task whose leases must be kept: it exists and has not ended."""
    return task is not None and not model.is_terminal(task.status.state)


class _Pool:
    """One network's free addresses during one plan: leased ones plus those picked so far."""

    def __init__(self, network: objects_pb2.Network) -> None:
        self.name = network.spec.name
        self.subnet = ipaddress.IPv4Network(network.subnet)
        self.range = usable_range(self.subnet)
        self.used: set[int] = set()
        self._cursor = self.range.start  # picks only go up within a plan

    def mark(self, address: str) -> None:
        value = int(ipaddress.IPv4Address(address))
        if value in self.range:
            self.used.add(value)

    def pick(self) -> str | None:
        while self._cursor in self.range and self._cursor in self.used:
            self._cursor += 1
        if self._cursor not in self.range:
            return None
        self.used.add(self._cursor)
        return str(ipaddress.IPv4Address(self._cursor))

    def unpick(self, address: str) -> None:
        value = int(ipaddress.IPv4Address(address))
        self.used.discard(value)
        self._cursor = min(self._cursor, value)

    def exhausted(self) -> str:
        return f"network {self.name}: no free address in {self.subnet} ({len(self.used)} in use)"


def plan(
    tasks: Iterable[objects_pb2.Task],
    networks: Mapping[str, objects_pb2.Network],
    leases: Iterable[objects_pb2.AddressLease],
) -> AllocationPlan:
    """What the allocator does over one snapshot. ``tasks`` are all tasks (leases of tasks
    not among them are released), ``networks`` by name, ``leases`` all leases.

    Leases released in this plan still count as used: their keys exist until the release
    commits, and reusing them is the next pass's business."""
    by_id = {t.id: t for t in tasks}
    out = AllocationPlan()
    pools: dict[str, _Pool] = {}
    owned: dict[tuple[str, str], str] = {}  # (network, task id) -> address it already holds
    all_leases = list(leases)

    def pool(name: str) -> _Pool | None:
        if name not in pools:
            network = networks.get(name)
            if network is None or not network.subnet:
                return None
            pools[name] = _Pool(network)
            for lease in all_leases:
                if lease.network == name:
                    pools[name].mark(lease.address)
        return pools[name]

    for lease in sorted(all_leases, key=lease_name):
        if not holds_addresses(by_id.get(lease.task_id)):
            out.release.append(lease_name(lease))
        else:
            owned[(lease.network, lease.task_id)] = lease.address

    waiting = sorted(
        (t for t in by_id.values() if needs_allocation(t)), key=lambda t: (_created(t), t.id)
    )
    for task in waiting:
        result = _allocate(task, pool, owned)
        if isinstance(result, Unallocated):
            out.waiting.append(result)
        else:
            out.allocated.append(result)
    return out


def _allocate(
    task: objects_pb2.Task,
    pool: Callable[[str], _Pool | None],
    owned: Mapping[tuple[str, str], str],
) -> Allocation | Unallocated:
    attachments: list[objects_pb2.NetworkAttachment] = []
    leases: list[objects_pb2.AddressLease] = []
    picked: list[tuple[_Pool, str]] = []
    for name in model.cluster_networks(task):
        p = pool(name)
        if p is None:
            _undo(picked)
            return Unallocated(task.id, f"network {name} does not exist")
        address = owned.get((name, task.id))
        if address is None:
            address = p.pick()
            if address is None:
                _undo(picked)
                return Unallocated(task.id, p.exhausted())
            picked.append((p, address))
            leases.append(objects_pb2.AddressLease(network=name, address=address, task_id=task.id))
        attachments.append(
            objects_pb2.NetworkAttachment(
                network=name,
                addresses=[f"{address}/{p.subnet.prefixlen}"],
                mac=model.mac_for(address),
            )
        )
    return Allocation(task.id, attachments, leases)


def _undo(picked: list[tuple[_Pool, str]]) -> None:
    """All or nothing per task: give back what an unfinished allocation picked."""
    for p, address in picked:
        p.unpick(address)


def _created(task: objects_pb2.Task) -> tuple[int, int]:
    return (task.meta.created_at.seconds, task.meta.created_at.nanos)
