"""Which overlay networks a node takes part in, and the peers it must reach on each: the
pure core of the network part of a dispatcher session.

An agent programs one static FDB entry (peer MAC -> peer node's underlay address) and one
neighbour entry (peer IP -> peer MAC) per endpoint of a network on another node. The
dispatcher sends each network's complete peer set, computed here from a snapshot of
tasks, nodes and networks, whenever it changes (the session remembers what it sent and
compares). A node takes part in a network while one of its tasks is attached to it and is
desired RUNNING or not yet terminal; a peer is a task on another node that holds an
address on the network and has not ended (desired SHUTDOWN but still stopping counts: its
container still answers until it is gone).

``affected_networks`` keeps a session's work proportional to what a batch of events
touched: a task event concerns the networks the task is attached to, and a deleted task
or a node change may concern any network the node was told about.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from orch import model
from orch.manager.state.api import Event, Kind
from orch.proto import dispatcher_pb2, objects_pb2

M = TypeVar("M", bound=Message)

Task = objects_pb2.Task


def peers_for_node(
    node_id: str,
    tasks: Iterable[Task],
    nodes: Mapping[str, objects_pb2.Node],
    networks: Mapping[str, objects_pb2.Network],
    only: set[str] | None = None,
) -> dict[str, dispatcher_pb2.NetworkPeers]:
    """The networks ``node_id`` takes part in (restricted to ``only`` when given), each
    with every endpoint on other nodes, peers sorted by task id."""
    local: set[str] = set()
    remote: dict[str, list[dispatcher_pb2.Peer]] = {}
    for task in tasks:
        if not task.node_id:
            continue
        for attachment in task.attachments:
            name = attachment.network
            if name not in networks or not attachment.addresses:
                continue
            if only is not None and name not in only:
                continue
            if task.node_id == node_id:
                if model.is_current(task):  # a stopping task keeps its node in the network
                    local.add(name)
                continue
            peer = _peer(task, attachment, nodes)
            if peer is not None:
                remote.setdefault(name, []).append(peer)
    return {
        name: dispatcher_pb2.NetworkPeers(
            network=networks[name],
            peers=sorted(remote.get(name, []), key=lambda p: (p.task_id, p.address)),
        )
        for name in sorted(local)
    }


def _peer(
    task: Task, attachment: objects_pb2.NetworkAttachment, nodes: Mapping[str, objects_pb2.Node]
) -> dispatcher_pb2.Peer | None:
    if model.is_terminal(task.status.state):
        return None
    node = nodes.get(task.node_id)
    if node is None or not node.description.addr:
        return None
    return dispatcher_pb2.Peer(
        task_id=task.id,
        address=attachment.addresses[0].split("/")[0],
        mac=attachment.mac,
        node_addr=node.description.addr,
    )


def affected_networks(
    events: Iterable[Event], sent: Iterable[str], networks: Mapping[str, objects_pb2.Network]
) -> set[str]:
    """The networks whose peer set a batch of events may have changed, for a node that was
    told about the networks ``sent``."""
    affected: set[str] = set()
    known = set(sent)
    for ev in events:
        if ev.kind is Kind.TASK:
            if ev.obj is None:
                affected |= known  # which networks it had is gone with it
            else:
                affected |= {a.network for a in ev.obj.attachments if a.network in networks}
        elif ev.kind is Kind.NODE:
            affected |= known  # an underlay address changed or a node left
        elif ev.kind is Kind.NETWORK:
            affected.add(ev.key.rsplit("/", 1)[1])
    return affected


@dataclass
class NetworkChanges:
    """What to send: networks whose peer set is new or changed, and networks dropped."""

    networks: list[dispatcher_pb2.NetworkPeers]
    removed: list[str]


def diff_by_network(
    sent: dict[str, M], fresh: Mapping[str, M], affected: set[str]
) -> tuple[list[M], list[str]]:
    """Compare the recomputed ``fresh`` per-network messages of the ``affected`` networks
    with ``sent``, and update ``sent`` to what the agent will know after the changes are
    sent. Returns (changed messages, names of removed networks). Peers and DNS records
    follow networks the same way."""
    changed, removed = [], []
    for name in sorted(affected):
        new = fresh.get(name)
        if new is None:
            if sent.pop(name, None) is not None:
                removed.append(name)
        elif sent.get(name) != new:
            sent[name] = new
            changed.append(new)
    return changed, removed
