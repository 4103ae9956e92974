"""The IPAM core without etcd: network values, per-task allocation, exhaustion, release,
and (hypothesis) that no address is ever held twice, also when two allocators race."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orch.errors import ValidationError
from orch.manager.allocator import ipam
from orch.proto import objects_pb2, specs_pb2
from orch.proto import types_pb2 as T


def network(name: str, subnet: str, vni: int = 4096) -> objects_pb2.Network:
    return objects_pb2.Network(
        spec=specs_pb2.NetworkSpec(name=name, driver="overlay"),
        vni=vni,
        subnet=subnet,
        gateway=ipam.gateway_of(subnet),
    )


_seq = itertools.count()


def task(
    *networks: str, task_id: str | None = None, state: int = T.NEW, desired: int = T.RUNNING
) -> objects_pb2.Task:
    t = objects_pb2.Task(id=task_id or f"t{next(_seq):04d}", desired_state=desired)
    t.meta.created_at.seconds = next(_seq)
    t.status.state = state
    for name in networks:
        t.networks.add(target=name)
    return t


def lease(net: str, address: str, task_id: str) -> objects_pb2.AddressLease:
    return objects_pb2.AddressLease(network=net, address=address, task_id=task_id)


NETS = {"front": network("front", "10.10.0.0/24"), "tiny": network("tiny", "10.10.9.0/29", 4097)}


# -- network values -----------------------------------------------------------------------


def test_gateway_and_usable_range_skip_network_gateway_broadcast() -> None:
    subnet = ipaddress.IPv4Network("10.10.9.0/29")
    assert ipam.gateway_of(str(subnet)) == "10.10.9.1"
    usable = [str(ipaddress.IPv4Address(a)) for a in ipam.usable_range(subnet)]
    assert usable == ["10.10.9.2", "10.10.9.3", "10.10.9.4", "10.10.9.5", "10.10.9.6"]


def test_next_vni_and_subnet_skip_taken_ones() -> None:
    s = ipam.IpamSettings()
    assert ipam.next_vni([], s) == 4096
    assert ipam.next_vni([4096, 4098], s) == 4097
    taken = [ipaddress.IPv4Network("10.10.0.0/24"), ipaddress.IPv4Network("10.10.1.128/25")]
    assert str(ipam.next_subnet(taken, s)) == "10.10.2.0/24"
    # A user subnet covering several pool subnets takes them all.
    assert str(ipam.next_subnet([ipaddress.IPv4Network("10.10.0.0/22")], s)) == "10.10.4.0/24"


def test_a_full_pool_and_full_vni_range_say_so() -> None:
    s = ipam.IpamSettings(address_pool="10.10.0.0/23", vni_min=5, vni_max=6)
    taken = [ipaddress.IPv4Network("10.10.0.0/23")]
    with pytest.raises(ValidationError, match=r"no free /24 left in the address pool 10.10.0.0/23"):
        ipam.next_subnet(taken, s)
    with pytest.raises(ValidationError, match=r"no free VNI left in 5..6"):
        ipam.next_vni([5, 6], s)


# -- allocation ---------------------------------------------------------------------------


def test_each_overlay_network_gets_an_address_in_task_network_order() -> None:
    t = task("tiny", "bridge", "front")
    plan = ipam.plan([t], NETS, [])
    [alloc] = plan.allocated
    assert [(a.network, list(a.addresses), a.mac) for a in alloc.attachments] == [
        ("tiny", ["10.10.9.2/29"], "02:42:0a:0a:09:02"),
        ("front", ["10.10.0.2/24"], "02:42:0a:0a:00:02"),
    ]
    assert [(le.network, le.address, le.task_id) for le in alloc.leases] == [
        ("tiny", "10.10.9.2", t.id),
        ("front", "10.10.0.2", t.id),
    ]


def test_builtin_networks_only_need_no_address() -> None:
    plan = ipam.plan([task(), task("bridge"), task("host")], NETS, [])
    assert [(a.attachments, a.leases) for a in plan.allocated] == [([], [])] * 3


def test_only_new_tasks_meant_to_run_and_unplaced_are_allocated() -> None:
    tasks = [
        task("front", state=T.PENDING),
        task("front", desired=T.SHUTDOWN),
        task("front", state=T.RUNNING),
    ]
    assert ipam.plan(tasks, NETS, []).allocated == []


def test_leased_addresses_are_skipped_and_older_tasks_go_first() -> None:
    holder = task("front", state=T.RUNNING)
    young, old = task("front", task_id="young"), task("front", task_id="old")
    young.meta.created_at.seconds, old.meta.created_at.seconds = 20, 10
    plan = ipam.plan([young, old, holder], NETS, [lease("front", "10.10.0.2", holder.id)])
    assert [(a.task_id, a.leases[0].address) for a in plan.allocated] == [
        ("old", "10.10.0.3"),
        ("young", "10.10.0.4"),
    ]


def test_exhaustion_keeps_the_task_waiting_with_the_reason_and_takes_nothing() -> None:
    holders = [task("tiny", state=T.RUNNING) for _ in range(4)]
    leases = [lease("tiny", f"10.10.9.{i + 2}", h.id) for i, h in enumerate(holders)]
    first, second = task("front", "tiny"), task("front", "tiny")
    plan = ipam.plan([*holders, first, second], NETS, leases)
    assert [a.task_id for a in plan.allocated] == [first.id]
    assert plan.waiting == [
        ipam.Unallocated(second.id, "network tiny: no free address in 10.10.9.0/29 (5 in use)")
    ]
    # All or nothing: the waiting task's front address went back, none was skipped.
    assert [a.leases[0].address for a in plan.allocated] == ["10.10.0.2"]


def test_a_missing_network_is_the_reason() -> None:
    plan = ipam.plan([task("gone")], NETS, [])
    assert [w.reason for w in plan.waiting] == ["network gone does not exist"]


def test_leases_of_ended_or_deleted_tasks_are_released_and_still_count_this_pass() -> None:
    ended = task("tiny", state=T.FAILED)
    live = task("tiny", state=T.RUNNING)
    leases = [
        lease("tiny", "10.10.9.2", ended.id),
        lease("tiny", "10.10.9.3", "deleted-task"),
        lease("tiny", "10.10.9.4", live.id),
    ]
    new = task("tiny")
    plan = ipam.plan([ended, live, new], NETS, leases)
    assert plan.release == ["tiny/10.10.9.2", "tiny/10.10.9.3"]
    assert plan.allocated[0].leases[0].address == "10.10.9.5"


def test_an_address_the_task_already_holds_is_reused() -> None:
    t = task("front")
    plan = ipam.plan([t], NETS, [lease("front", "10.10.0.7", t.id)])
    [alloc] = plan.allocated
    assert alloc.leases == [] and list(alloc.attachments[0].addresses) == ["10.10.0.7/24"]


# -- the invariant, over random histories -------------------------------------------------


class World:
    """Tasks and leases as etcd holds them, with the allocator shell's commit rules: a
    task's group lands only if the task is unchanged and every lease key is absent."""

    def __init__(self) -> None:
        self.tasks: dict[str, objects_pb2.Task] = {}
        self.versions: dict[str, int] = {}
        self.leases: dict[str, objects_pb2.AddressLease] = {}

    def add(self, t: objects_pb2.Task) -> None:
        self.tasks[t.id] = t
        self.versions[t.id] = 0

    def snapshot(self) -> tuple[list[objects_pb2.Task], dict[str, int], list]:
        copies = []
        for t in self.tasks.values():
            c = objects_pb2.Task()
            c.CopyFrom(t)
            copies.append(c)
        return copies, dict(self.versions), list(self.leases.values())

    def commit(self, plan: ipam.AllocationPlan, versions: dict[str, int]) -> None:
        for name in plan.release:
            self.leases.pop(name, None)
        for alloc in plan.allocated:
            t = self.tasks.get(alloc.task_id)
            names = [ipam.lease_name(le) for le in alloc.leases]
            if (
                t is None
                or self.versions[t.id] != versions.get(t.id)
                or any(n in self.leases for n in names)
            ):
                continue  # the guard failed: nothing of this group lands
            for le in alloc.leases:
                self.leases[ipam.lease_name(le)] = le
            del t.attachments[:]
            t.attachments.extend(alloc.attachments)
            t.status.state = T.PENDING
            self.versions[t.id] += 1

    def end(self, index: int, delete: bool) -> None:
        ids = sorted(self.tasks)
        if not ids:
            return
        task_id = ids[index % len(ids)]
        if delete:
            del self.tasks[task_id]
        else:
            self.tasks[task_id].status.state = T.SHUTDOWN
            self.versions[task_id] += 1

    def check(self) -> None:
        held: dict[tuple[str, str], str] = {}
        for t in self.tasks.values():
            if not ipam.holds_addresses(t) or t.status.state == T.NEW:
                continue
            for att in t.attachments:
                address = att.addresses[0].split("/")[0]
                key = (att.network, address)
                assert key not in held, f"{key} held by {held[key]} and {t.id}"
                held[key] = t.id
                lease = self.leases[f"{att.network}/{address}"]
                assert lease.task_id == t.id
                subnet = ipaddress.IPv4Network(NETS[att.network].subnet)
                assert int(ipaddress.IPv4Address(address)) in ipam.usable_range(subnet)


STEP = st.one_of(
    st.tuples(
        st.just("create"),
        st.lists(st.sampled_from(["front", "tiny", "bridge"]), max_size=2, unique=True),
    ),
    st.tuples(st.just("end"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("allocate"), st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(STEP, max_size=40))
def test_no_address_is_ever_held_twice_even_by_racing_allocators(steps: list) -> None:
    world = World()
    for step in steps:
        if step[0] == "create":
            world.add(task(*step[1]))
        elif step[0] == "end":
            world.end(step[1], step[2])
        else:
            # One allocator, or two deciding on the same snapshot and committing in turn.
            tasks, versions, leases = world.snapshot()
            plans = [ipam.plan(tasks, NETS, leases) for _ in range(2 if step[1] else 1)]
            for plan in plans:
                # The core alone: no address twice in one plan, none already leased.
                names = [ipam.lease_name(le) for a in plan.allocated for le in a.leases]
                assert len(names) == len(set(names))
                assert not set(names) & {ipam.lease_name(le) for le in leases}
                world.commit(plan, versions)
        world.check()
