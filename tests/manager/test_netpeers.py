"""The network part of a dispatcher session as pure functions: which overlay networks a
node takes part in, its peers on each, which networks a batch of events touches, and the
diff against what the agent was told."""

from __future__ import annotations

from orch.manager.dispatcher import netpeers
from orch.manager.state.api import Event, Kind
from orch.proto import dispatcher_pb2, objects_pb2, specs_pb2
from orch.proto import types_pb2 as T


def network(name: str, vni: int = 4096) -> objects_pb2.Network:
    return objects_pb2.Network(
        spec=specs_pb2.NetworkSpec(name=name), vni=vni, subnet="10.10.0.0/24"
    )


NETWORKS = {"front": network("front"), "back": network("back", 4097)}


def node(node_id: str, addr: str) -> objects_pb2.Node:
    n = objects_pb2.Node(id=node_id)
    n.description.addr = addr
    return n


NODES = {
    "a": node("a", "10.212.0.11"),
    "b": node("b", "10.212.0.12"),
    "c": node("c", "10.212.0.13"),
}


def task(
    task_id: str,
    node_id: str,
    *attachments: tuple[str, str],
    state: int = T.RUNNING,
    desired: int = T.RUNNING,
) -> objects_pb2.Task:
    t = objects_pb2.Task(id=task_id, node_id=node_id, desired_state=desired)
    t.status.state = state
    for name, address in attachments:
        t.attachments.add(network=name, addresses=[f"{address}/24"], mac=f"mac-{address}")
    return t


def peers(result: dict, name: str) -> list[tuple[str, str, str, str]]:
    return [(p.task_id, p.address, p.mac, p.node_addr) for p in result[name].peers]


def test_a_node_gets_each_network_of_its_tasks_with_the_endpoints_elsewhere() -> None:
    tasks = [
        task("a1", "a", ("front", "10.10.0.2")),
        task("b1", "b", ("front", "10.10.0.3"), ("back", "10.10.0.4")),
        task("c1", "c", ("back", "10.10.0.5")),
        task("a2", "a", ("bridge", "172.18.0.2")),  # built-in: no Network object
    ]
    result = netpeers.peers_for_node("a", tasks, NODES, NETWORKS)
    assert list(result) == ["front"]  # a has no task on back
    assert result["front"].network == NETWORKS["front"]
    assert peers(result, "front") == [("b1", "10.10.0.3", "mac-10.10.0.3", "10.212.0.12")]
    result_b = netpeers.peers_for_node("b", tasks, NODES, NETWORKS)
    assert list(result_b) == ["back", "front"]
    assert [p[0] for p in peers(result_b, "back")] == ["c1"]
    assert [p[0] for p in peers(result_b, "front")] == ["a1"]


def test_ended_remote_tasks_are_no_peers_stopping_ones_still_are() -> None:
    tasks = [
        task("a1", "a", ("front", "10.10.0.2")),
        task("b1", "b", ("front", "10.10.0.3"), state=T.FAILED),
        task("b2", "b", ("front", "10.10.0.4"), desired=T.SHUTDOWN),
        task("b3", "", ("front", "10.10.0.5"), state=T.PENDING),  # not placed yet
        task("gone", "z", ("front", "10.10.0.6")),  # its node is unknown
    ]
    result = netpeers.peers_for_node("a", tasks, NODES, NETWORKS)
    assert [p[0] for p in peers(result, "front")] == ["b2"]


def test_a_node_leaves_a_network_when_its_last_task_there_ended_and_is_not_wanted() -> None:
    ended = task("a1", "a", ("front", "10.10.0.2"), state=T.SHUTDOWN, desired=T.SHUTDOWN)
    waiting_restart = task("a2", "a", ("back", "10.10.0.3"), state=T.FAILED)
    result = netpeers.peers_for_node("a", [ended, waiting_restart], NODES, NETWORKS)
    assert list(result) == ["back"]


def test_only_restricts_the_networks_computed() -> None:
    tasks = [task("a1", "a", ("front", "10.10.0.2"), ("back", "10.10.0.3"))]
    assert list(netpeers.peers_for_node("a", tasks, NODES, NETWORKS, {"back"})) == ["back"]


def ev(kind: Kind, name: str, obj: object = None) -> Event:
    return Event(kind, kind.key(name), obj, 1)  # type: ignore[arg-type]


def test_affected_networks_per_event_kind() -> None:
    sent = ["front", "back"]
    t = task("b1", "b", ("front", "10.10.0.3"), ("bridge", "x"))
    assert netpeers.affected_networks([ev(Kind.TASK, "b1", t)], sent, NETWORKS) == {"front"}
    assert netpeers.affected_networks([ev(Kind.TASK, "b1")], sent, NETWORKS) == {"front", "back"}
    assert netpeers.affected_networks([ev(Kind.NODE, "b", NODES["b"])], [], NETWORKS) == set()
    assert netpeers.affected_networks([ev(Kind.NETWORK, "new")], sent, NETWORKS) == {"new"}
    unrelated = task("c1", "c", ("bridge", "172.18.0.2"))
    assert netpeers.affected_networks([ev(Kind.TASK, "c1", unrelated)], sent, NETWORKS) == set()


def test_diff_sends_only_what_changed_and_drops_what_is_gone() -> None:
    old = dispatcher_pb2.NetworkPeers(network=NETWORKS["front"])
    same = dispatcher_pb2.NetworkPeers(network=NETWORKS["back"])
    sent = {"front": old, "back": same}
    new_front = dispatcher_pb2.NetworkPeers(
        network=NETWORKS["front"], peers=[dispatcher_pb2.Peer(task_id="b1")]
    )
    changes = diff_networks(sent, {"front": new_front, "back": same}, {"front", "back", "other"})
    assert (changes.networks, changes.removed) == ([new_front], [])
    changes = diff_networks(sent, {}, {"back"})
    assert (changes.networks, changes.removed) == ([], ["back"])
    assert sent == {"front": new_front}


def diff_networks(sent, fresh, affected) -> netpeers.NetworkChanges:
    return netpeers.NetworkChanges(*netpeers.diff_by_network(sent, fresh, affected))
