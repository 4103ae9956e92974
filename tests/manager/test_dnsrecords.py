"""The DNS part of a dispatcher session as pure functions: which networks a node gets
records for, which endpoints each lists and which are answerable, which networks a batch
of events touches, and the diff against what the agent was told."""

from __future__ import annotations

from orch.manager.dispatcher import dnsrecords, netpeers
from orch.manager.state.api import Event, Kind
from orch.proto import dispatcher_pb2, objects_pb2, specs_pb2
from orch.proto import types_pb2 as T


def network(name: str, vni: int = 4096) -> objects_pb2.Network:
    return objects_pb2.Network(
        spec=specs_pb2.NetworkSpec(name=name), vni=vni, subnet="10.10.0.0/24"
    )


NETWORKS = {"front": network("front"), "back": network("back", 4097)}


def task(
    task_id: str,
    node_id: str,
    service: str,
    slot: int,
    *attachments: tuple[str, str],
    declared: tuple[str, ...] | None = None,
    state: int = T.RUNNING,
    desired: int = T.RUNNING,
    health: int = T.HEALTH_UNSPECIFIED,
) -> objects_pb2.Task:
    t = objects_pb2.Task(
        id=task_id, node_id=node_id, service_name=service, slot=slot, desired_state=desired
    )
    t.status.state = state
    t.status.health = health
    for name in declared if declared is not None else [a[0] for a in attachments]:
        if name != "bridge" or declared is not None:
            t.networks.add(target=name)
    for name, address in attachments:
        t.attachments.add(network=name, addresses=[f"{address}/24"])
    return t


def listing(records: dict, name: str) -> list[tuple[str, int, str, str, bool]]:
    return [
        (e.service, e.slot, e.task_id, e.address, e.answerable) for e in records[name].endpoints
    ]


def test_answerable_means_running_meant_to_run_and_healthy_or_unchecked() -> None:
    def ok(**kw) -> bool:
        return dnsrecords.answerable(task("t", "a", "web", 1, **kw))

    assert ok()
    assert ok(health=T.HEALTH_NONE)
    assert ok(health=T.HEALTH_HEALTHY)
    assert not ok(health=T.HEALTH_STARTING)
    assert not ok(health=T.HEALTH_UNHEALTHY)
    assert not ok(state=T.STARTING)
    assert not ok(desired=T.SHUTDOWN)  # being stopped: out of DNS before it stops
    assert not ok(state=T.COMPLETE)


def test_overlay_records_span_nodes_bridge_records_stay_on_their_node() -> None:
    tasks = [
        task("a1", "a", "web", 1, ("front", "10.10.0.2")),
        task("b1", "b", "web", 2, ("front", "10.10.0.3")),
        task("c1", "c", "db", 1, ("back", "10.10.0.9")),
        task("a2", "a", "cache", 1, ("bridge", "172.18.0.2")),
        task("b2", "b", "cache", 2, ("bridge", "172.18.1.2")),
    ]
    result = dnsrecords.records_for_node("a", tasks, NETWORKS)
    assert list(result) == ["bridge", "front"]  # a has no task on back
    assert listing(result, "front") == [
        ("web", 1, "a1", "10.10.0.2", True),
        ("web", 2, "b1", "10.10.0.3", True),
    ]
    assert listing(result, "bridge") == [("cache", 1, "a2", "172.18.0.2", True)]
    assert list(dnsrecords.records_for_node("c", tasks, NETWORKS)) == ["back"]


def test_unanswerable_tasks_are_listed_ended_ones_are_not() -> None:
    tasks = [
        task("a1", "a", "web", 1, ("front", "10.10.0.2")),
        task("b1", "b", "web", 2, ("front", "10.10.0.3"), health=T.HEALTH_STARTING),
        task("b2", "b", "web", 3, ("front", "10.10.0.4"), state=T.FAILED),
        task("n1", "", "web", 4, ("front", "10.10.0.5"), state=T.PENDING),  # not placed yet
        task("b3", "b", "web", 5, ("front", "10.10.0.6"), desired=T.SHUTDOWN),
    ]
    result = dnsrecords.records_for_node("a", tasks, NETWORKS)
    assert listing(result, "front") == [
        ("web", 1, "a1", "10.10.0.2", True),
        ("web", 2, "b1", "10.10.0.3", False),
        ("web", 4, "n1", "10.10.0.5", False),
        ("web", 5, "b3", "10.10.0.6", False),
    ]


def test_a_node_takes_part_as_soon_as_a_task_declares_the_network() -> None:
    # Assigned, no address on the bridge yet (the agent gives it when preparing): the
    # records already come with the task, so they are there before the container asks.
    fresh = task("a1", "a", "web", 1, declared=(), state=T.ASSIGNED)
    on_front = task("a2", "a", "api", 1, declared=("front",), state=T.ASSIGNED)
    other = task("b1", "b", "db", 1, ("front", "10.10.0.7"))
    result = dnsrecords.records_for_node("a", [fresh, on_front, other], NETWORKS)
    assert list(result) == ["bridge", "front"]
    assert listing(result, "bridge") == []
    assert listing(result, "front") == [("db", 1, "b1", "10.10.0.7", True)]


def test_host_none_and_unknown_networks_have_no_records() -> None:
    tasks = [
        task("a1", "a", "web", 1, declared=("host",)),
        task("a2", "a", "web", 2, declared=("none",)),
        task("a3", "a", "web", 3, declared=("gone",)),
    ]
    assert dnsrecords.records_for_node("a", tasks, NETWORKS) == {}


def test_ended_local_tasks_leave_the_network_but_a_stopping_one_keeps_it() -> None:
    ended = task("a1", "a", "web", 1, ("front", "10.10.0.2"), state=T.FAILED, desired=T.SHUTDOWN)
    assert dnsrecords.records_for_node("a", [ended], NETWORKS) == {}
    # Ended but meant to run (its restart is due): the node keeps the network, empty.
    restarting = task("a1", "a", "web", 1, ("front", "10.10.0.2"), state=T.FAILED)
    assert listing(dnsrecords.records_for_node("a", [restarting], NETWORKS), "front") == []
    stopping = task("a1", "a", "web", 1, ("front", "10.10.0.2"), desired=T.SHUTDOWN)
    result = dnsrecords.records_for_node("a", [stopping], NETWORKS)
    assert listing(result, "front") == [("web", 1, "a1", "10.10.0.2", False)]


def test_only_restricts_the_networks_computed() -> None:
    tasks = [task("a1", "a", "web", 1, ("front", "10.10.0.2"), ("back", "10.10.1.2"))]
    assert list(dnsrecords.records_for_node("a", tasks, NETWORKS, only={"back"})) == ["back"]


def ev(kind: Kind, name: str, obj=None) -> Event:
    return Event(kind=kind, key=kind.key(name), obj=obj, mod_revision=1)


def test_affected_networks() -> None:
    web = task("b1", "b", "web", 1, ("front", "10.10.0.2"))
    plain = task("b2", "b", "web", 2, declared=())
    sent = ["front", "bridge"]
    assert dnsrecords.affected_networks([ev(Kind.TASK, "b1", web)], sent, NETWORKS) == {"front"}
    assert dnsrecords.affected_networks([ev(Kind.TASK, "b2", plain)], sent, NETWORKS) == {"bridge"}
    assert dnsrecords.affected_networks([ev(Kind.TASK, "b1")], sent, NETWORKS) == set(sent)
    assert dnsrecords.affected_networks([ev(Kind.NODE, "b", objects_pb2.Node())], sent, {}) == set()
    assert dnsrecords.affected_networks(
        [ev(Kind.NETWORK, "back", NETWORKS["back"])], sent, NETWORKS
    ) == {"back"}


def test_diff_sends_changed_and_removed_networks_only() -> None:
    before = [task("a1", "a", "web", 1, ("front", "10.10.0.2"), health=T.HEALTH_STARTING)]
    sent = dict(dnsrecords.records_for_node("a", before, NETWORKS))
    same = diff_records(sent, dnsrecords.records_for_node("a", before, NETWORKS), {"front"})
    assert same.records == [] and same.removed == []

    healthy = [task("a1", "a", "web", 1, ("front", "10.10.0.2"), health=T.HEALTH_HEALTHY)]
    changes = diff_records(sent, dnsrecords.records_for_node("a", healthy, NETWORKS), {"front"})
    assert [r.network for r in changes.records] == ["front"]
    assert changes.records[0].endpoints[0].answerable
    assert sent["front"] == changes.records[0]

    gone = diff_records(sent, {}, {"front"})
    assert gone.records == [] and gone.removed == ["front"] and sent == {}


def test_the_feed_sends_everything_first_then_what_changed() -> None:
    feed = dnsrecords.DnsFeed("a")
    tasks = [task("a1", "a", "web", 1, ("front", "10.10.0.2"), health=T.HEALTH_STARTING)]
    first = feed.full(tasks, NETWORKS)
    assert [r.network for r in first.records] == ["front"]
    assert first.network_names == ["back", "front"]

    assert not feed.changes([ev(Kind.TASK, "a1", tasks[0])], tasks, NETWORKS)
    healthy = [task("a1", "a", "web", 1, ("front", "10.10.0.2"), health=T.HEALTH_HEALTHY)]
    changed = feed.changes([ev(Kind.TASK, "a1", healthy[0])], healthy, NETWORKS)
    assert [r.network for r in changed.records] == ["front"] and changed.network_names is None

    # A network of the cluster appears: only its name is news to a node not on it.
    more = {**NETWORKS, "side": network("side", 4098)}
    named = feed.changes([ev(Kind.NETWORK, "side", more["side"])], healthy, more)
    assert named.records == [] and named.network_names == ["back", "front", "side"]
    msg = dispatcher_pb2.Assignments()
    named.fill(msg)
    assert list(msg.dns_network_names.names) == ["back", "front", "side"]
    # Every network gone: an empty but present list.
    deleted = [ev(Kind.NETWORK, name) for name in ("side", "front", "back")]
    gone = feed.changes(deleted, healthy, {})
    msg = dispatcher_pb2.Assignments()
    gone.fill(msg)
    assert msg.HasField("dns_network_names") and list(msg.removed_dns) == ["front"]


def diff_records(sent, fresh, affected) -> dnsrecords.RecordChanges:
    return dnsrecords.RecordChanges(*netpeers.diff_by_network(sent, fresh, affected))
