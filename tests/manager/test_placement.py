"""Placement on in-memory state: the constraint grammar (orch/placement.py), the
scheduler's constraint, max_replicas_per_node and spread rules with their pending reasons,
and their invariants over random labelled clusters (hypothesis)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from orch.placement import (
    Attribute,
    PlacementError,
    parse_constraint,
    parse_spread,
)
from orch.proto import objects_pb2
from orch.proto import types_pb2 as T

from .harness import Harness, MiB

# -- the grammar ----------------------------------------------------------------------------


def node(**labels: str) -> objects_pb2.Node:
    n = objects_pb2.Node(id="abc123")
    n.description.hostname = "host1"
    n.description.platform = "linux/amd64"
    n.description.labels["disk"] = "ssd"
    n.spec.labels.update(labels)
    return n


@pytest.mark.parametrize(
    ("text", "canonical", "matches"),
    [
        ("node.labels.zone==a", "node.labels.zone==a", True),
        (" node.labels.zone == A ", "node.labels.zone==A", True),  # values: any case
        ("node.labels.zone!=a", "node.labels.zone!=a", False),
        ("node.labels.rack!=r1", "node.labels.rack!=r1", True),  # missing label reads ""
        ("node.labels.rack==r1", "node.labels.rack==r1", False),
        ("NODE.HOSTNAME==host1", "node.hostname==host1", True),
        ("node.id==abc123", "node.id==abc123", True),
        ("node.id!=abc123", "node.id!=abc123", False),
        ("engine.labels.disk==ssd", "engine.labels.disk==ssd", True),
        ("node.platform.os==linux", "node.platform.os==linux", True),
        ("node.platform.arch!=arm64", "node.platform.arch!=arm64", True),
    ],
)
def test_constraints_parse_and_match(text: str, canonical: str, matches: bool) -> None:
    c = parse_constraint(text)
    assert str(c) == canonical
    assert c.matches(node(zone="a")) is matches


def test_label_keys_are_case_sensitive() -> None:
    assert not parse_constraint("node.labels.Zone==a").matches(node(zone="a"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node.labels.zone=a", "expected '==' or '!=' in 'node.labels.zone=a'; did you mean "
         "'node.labels.zone==a'?"),
        ("node.labels.zone", "no '==' or '!=' in 'node.labels.zone'"),
        ("node.labels.zone==", "no value after '==' in 'node.labels.zone=='"),
        ("node.cpus>=2", "unsupported operator '>=' in 'node.cpus>=2'"),
        ("node.foo==x", "unknown attribute 'node.foo'"),
        ("zone==a", "unknown attribute 'zone'; did you mean 'node.labels.zone'?"),
        ("node.label.zone==a", "unknown attribute 'node.label.zone'; did you mean "
         "'node.labels.zone'?"),
        ("node.hostnme==a", "unknown attribute 'node.hostnme'; did you mean 'node.hostname'?"),
        ("node.labels.==a", "no label key after 'node.labels.'"),
        ("node.labels.a b==c", "invalid label key 'a b' in 'node.labels.a b'"),
        ("==a", "no attribute given"),
        ("node.id==a==b", "invalid value 'a==b' in 'node.id==a==b'"),
    ],
)  # fmt: skip
def test_bad_constraints_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PlacementError) as info:
        parse_constraint(text)
    assert info.value.message == message
    assert "ATTRIBUTE==VALUE" in info.value.accepted


def test_spread_keys() -> None:
    assert parse_spread("node.labels.zone") == Attribute("node.labels", "zone")
    assert parse_spread("node.labels.zone").of(node()) == ""
    with pytest.raises(PlacementError, match=r"did you mean 'node\.labels\.zone'"):
        parse_spread("zone")


# -- the scheduler: constraints and max_replicas_per_node ------------------------------------


def zones(h: Harness, **by_node: str) -> None:
    for node_id, zone in by_node.items():
        h.node(node_id, labels={"zone": zone} if zone else {})


def placed(h: Harness, service: str) -> Counter[str]:
    return Counter(t.node_id for t in h.tasks.values() if t.service_id == service and t.node_id)


def test_constraints_keep_tasks_on_matching_nodes() -> None:
    h = Harness()
    zones(h, n1="a", n2="b", n3="b", n4="")
    h.service("web", replicas=4, constraints=["node.labels.zone==b"])
    h.step()
    h.place()
    assert placed(h, "web") == {"n2": 2, "n3": 2}
    h.service("api", replicas=3, constraints=["node.labels.zone!=b", "node.hostname!=n1"])
    h.step()
    h.place()
    assert placed(h, "api") == {"n4": 3}


def test_an_impossible_constraint_leaves_tasks_pending_with_the_reason() -> None:
    h = Harness()
    zones(h, n1="a", n2="b", n3="b")
    h.node("n4", status=T.NODE_DOWN, labels={"zone": "c"})
    h.service("web", replicas=2, constraints=["node.labels.zone==c"])
    h.step()
    decisions = h.place()
    assert [d.node_id for d in decisions] == [None, None]
    assert decisions[0].reason == (
        "no suitable node (4 nodes): 1 down, 3 not matching constraint node.labels.zone==c"
    )
    assert h.tasks[decisions[0].task_id].status.err == decisions[0].reason


def test_each_node_reports_its_first_unmet_constraint() -> None:
    h = Harness()
    zones(h, n1="a", n2="b", n3="b")
    h.service("web", constraints=["node.labels.zone==b", "node.hostname==n1"])
    h.step()
    (d,) = h.place()
    assert d.reason == (
        "no suitable node (3 nodes): 1 not matching constraint node.labels.zone==b, "
        "2 not matching constraint node.hostname==n1"
    )


def test_max_replicas_per_node_caps_each_node_and_the_rest_wait() -> None:
    h = Harness()
    zones(h, n1="a", n2="a", n3="b")
    h.service("web", replicas=5, max_per_node=1, constraints=["node.labels.zone==a"])
    h.step()
    decisions = h.place()
    assert placed(h, "web") == {"n1": 1, "n2": 1}
    waiting = [d for d in decisions if d.node_id is None]
    assert len(waiting) == 3
    assert waiting[0].reason == (
        "no suitable node (3 nodes): 1 not matching constraint node.labels.zone==a, "
        "2 at max_replicas_per_node (1)"
    )


def test_max_replicas_per_node_counts_tasks_still_stopping() -> None:
    h = Harness()
    h.node("n1")
    h.service("web", max_per_node=1)
    h.add_task("web", 1, node="n1", state=T.RUNNING, desired=T.SHUTDOWN)
    h.add_task("web", 1, state=T.PENDING, task_id="new")
    (d,) = h.schedule()
    assert d.node_id is None
    assert d.reason == "no suitable node (1 node): 1 at max_replicas_per_node (1)"


# -- the scheduler: spread -------------------------------------------------------------------


def test_spread_over_a_zone_label_balances_zones_not_nodes() -> None:
    h = Harness()
    zones(h, n1="a", n2="a", n3="a", n4="b")
    h.service("web", replicas=4, spread=["node.labels.zone"])
    h.step()
    decisions = h.place()
    per_zone = Counter(h.nodes[t.node_id].spec.labels["zone"] for t in h.tasks.values())
    assert per_zone == {"a": 2, "b": 2}
    assert placed(h, "web")["n4"] == 2
    assert decisions[0].reason.startswith("spread node.labels.zone=a (0 there); least loaded")


def test_nodes_without_the_label_form_their_own_group() -> None:
    h = Harness()
    zones(h, n1="a", n2="b", n3="", n4="", n5="")
    h.service("web", replicas=6, spread=["node.labels.zone"])
    h.step()
    h.place()
    p = placed(h, "web")
    assert (p["n1"], p["n2"], p["n3"] + p["n4"] + p["n5"]) == (2, 2, 2)


def test_spread_counts_what_already_runs_and_respects_constraints() -> None:
    h = Harness()
    zones(h, n1="a", n2="b", n3="c")
    h.service("web", replicas=3, spread=["node.labels.zone"], constraints=["node.labels.zone!=c"])
    h.add_task("web", 1, node="n1", state=T.RUNNING)
    h.add_task("web", 2, node="n1", state=T.RUNNING)
    h.add_task("web", 3, state=T.PENDING, task_id="w3")
    assert [d.node_id for d in h.schedule()] == ["n2"]


def test_two_spread_levels_split_within_each_group() -> None:
    h = Harness()
    h.node("n1", labels={"zone": "a", "rack": "r1"})
    h.node("n2", labels={"zone": "a", "rack": "r2"})
    h.node("n3", labels={"zone": "b", "rack": "r1"})
    h.service("web", replicas=4, spread=["node.labels.zone", "node.labels.rack"])
    h.step()
    h.place()
    assert placed(h, "web") == {"n1": 1, "n2": 1, "n3": 2}


def test_spread_yields_to_filters_a_full_zone_does_not_block() -> None:
    h = Harness()
    h.node("n1", labels={"zone": "a"}, memory=256 * MiB)
    h.node("n2", labels={"zone": "b"})
    h.service("web", replicas=3, memory=200 * MiB, spread=["node.labels.zone"])
    h.step()
    h.place()
    assert placed(h, "web") == {"n1": 1, "n2": 2}


# -- properties ------------------------------------------------------------------------------

ZONES = ["a", "b", "c", ""]
CONSTRAINTS = [
    "node.labels.zone==a",
    "node.labels.zone!=a",
    "node.labels.zone==b",
    "node.labels.disk==ssd",
    "node.labels.disk!=ssd",
    "node.hostname!=n0",
    "node.id==n1",
]


@st.composite
def labelled(draw: st.DrawFn) -> Harness:
    h = Harness()
    for i in range(draw(st.integers(1, 6))):
        labels = {}
        if zone := draw(st.sampled_from(ZONES)):
            labels["zone"] = zone
        if draw(st.booleans()):
            labels["disk"] = "ssd"
        h.node(
            f"n{i}",
            labels=labels,
            status=draw(st.sampled_from([T.NODE_READY, T.NODE_READY, T.NODE_DOWN])),
            memory=draw(st.sampled_from([1024, 4096])) * MiB,
        )
    for name in ("s1", "s2"):
        h.service(
            name,
            replicas=draw(st.integers(0, 10)),
            memory=draw(st.sampled_from([0, 300])) * MiB,
            constraints=draw(st.lists(st.sampled_from(CONSTRAINTS), max_size=2)),
            spread=draw(st.sampled_from([[], ["node.labels.zone"]])),
            max_per_node=draw(st.sampled_from([0, 0, 1, 2])),
        )
    h.step()
    return h


@settings(max_examples=300, deadline=None)
@given(labelled())
def test_constraints_and_max_per_node_are_never_violated(h: Harness) -> None:
    note(repr(h))
    for d in h.place():
        task = h.tasks[d.task_id]
        spec = h.services[task.service_id].spec
        if d.node_id is None:
            assert d.reason.startswith("no suitable node")
            continue
        node_ = h.nodes[d.node_id]
        for text in spec.placement.constraints:
            assert parse_constraint(text).matches(node_), f"{text} broken on {node_.id}"
    for service in h.services.values():
        limit = service.spec.placement.max_replicas_per_node
        if limit:
            assert max(placed(h, service.id).values(), default=0) <= limit


@settings(max_examples=200, deadline=None)
@given(
    node_zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=7),
    replicas=st.integers(0, 20),
)
def test_spread_is_balanced_within_one_across_zones(node_zones: list[str], replicas: int) -> None:
    h = Harness()
    for i, zone in enumerate(node_zones):
        h.node(f"n{i}", labels={"zone": zone} if zone else {})
    h.service("web", replicas=replicas, spread=["node.labels.zone"])
    h.step()
    assert all(d.node_id for d in h.place())
    per_zone = Counter({z: 0 for z in node_zones})
    per_zone.update(h.nodes[t.node_id].spec.labels.get("zone", "") for t in h.tasks.values())
    note(f"{per_zone}")
    assert max(per_zone.values()) - min(per_zone.values()) <= 1
