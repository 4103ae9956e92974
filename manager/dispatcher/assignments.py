"""What a node's agent is told: its assignment set (its tasks, the peers of its overlay
networks, the DNS records of its networks) in full on (re)connect, then only what a batch
of view events changed. A task is (re)sent when it is new to the node or its desired
state changed, and dropped when it is deleted or moved; an overlay network's complete
peer set is (re)sent when it changes (netpeers.py); DNS records follow (dnsrecords.py).
Pure over the view: the session in server.py only queues the messages."""

from __future__ import annotations

from typing import Any

from orch.manager.dispatcher import dnsrecords, netpeers
from orch.manager.state.api import Event, Kind
from orch.manager.state.view import ClusterView
from orch.proto import dispatcher_pb2, objects_pb2


class AssignmentFeed:
    """One session's memory of what its agent was told: ``sent`` (task id -> desired
    state), so status echoes of the agent's own reports are not sent back; the peer set
    of each overlay network; the DNS records."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.sent: dict[str, int] = {}
        self.sent_networks: dict[str, dispatcher_pb2.NetworkPeers] = {}
        self.dns = dnsrecords.DnsFeed(node_id)

    def full(self, view: ClusterView) -> dispatcher_pb2.ManagerMessage:
        """The whole assignment set; forgets what was sent before."""
        tasks = list(view.objects(Kind.TASK))
        mine = [t for t in tasks if t.node_id == self.node_id]
        self.sent.clear()
        self.sent.update({t.id: t.desired_state for t in mine})
        fresh = netpeers.peers_for_node(self.node_id, tasks, _nodes(view), _networks(view))
        self.sent_networks.clear()
        self.sent_networks.update(fresh)
        return assignments(
            full=True,
            tasks=mine,
            networks=fresh.values(),
            dns=self.dns.full(tasks, _networks(view)),
        )

    def changes(
        self, batch: list[Event], view: ClusterView
    ) -> dispatcher_pb2.ManagerMessage | None:
        """What ``batch`` changed for the agent; None when nothing did."""
        upserts, removed = task_changes(self.node_id, batch, self.sent)
        networks = _networks(view)
        affected = netpeers.affected_networks(batch, self.sent_networks, networks)
        net_changes = netpeers.NetworkChanges([], [])
        if affected:
            fresh = netpeers.peers_for_node(
                self.node_id, view.objects(Kind.TASK), _nodes(view), networks, affected
            )
            changed = netpeers.diff_by_network(self.sent_networks, fresh, affected)
            net_changes = netpeers.NetworkChanges(*changed)
        dns_changes = self.dns.changes(batch, view.objects(Kind.TASK), networks)
        if not (upserts or removed or net_changes.networks or net_changes.removed or dns_changes):
            return None
        return assignments(
            tasks=upserts.values(),
            removed=removed,
            networks=net_changes.networks,
            removed_networks=net_changes.removed,
            dns=dns_changes,
        )


def _nodes(view: ClusterView) -> dict[str, objects_pb2.Node]:
    return {n.id: n for n in view.objects(Kind.NODE)}


def _networks(view: ClusterView) -> dict[str, objects_pb2.Network]:
    return {n.spec.name: n for n in view.objects(Kind.NETWORK)}


def task_changes(
    node_id: str, batch: list[Event], sent: dict[str, int]
) -> tuple[dict[str, objects_pb2.Task], set[str]]:
    """Tasks to (re)send and task ids to drop for one batch of view events; updates
    ``sent`` (task id -> desired state the agent was told)."""
    upserts: dict[str, objects_pb2.Task] = {}
    removed: set[str] = set()
    for ev in batch:
        if ev.kind is not Kind.TASK:
            continue
        task_id = ev.key.rsplit("/", 1)[1]
        task = ev.obj
        if task is not None and task.node_id == node_id:
            if sent.get(task_id) != task.desired_state:
                sent[task_id] = task.desired_state
                upserts[task_id] = task
                removed.discard(task_id)
        elif task_id in sent:
            del sent[task_id]
            upserts.pop(task_id, None)
            removed.add(task_id)
    return upserts, removed


def assignments(
    *,
    full: bool = False,
    tasks: Any = (),
    removed: Any = (),
    networks: Any = (),
    removed_networks: Any = (),
    dns: dnsrecords.RecordChanges | None = None,
) -> dispatcher_pb2.ManagerMessage:
    msg = dispatcher_pb2.ManagerMessage(
        assignments=dispatcher_pb2.Assignments(
            full=full,
            tasks=list(tasks),
            removed=sorted(removed),
            networks=list(networks),
            removed_networks=sorted(removed_networks),
        )
    )
    if dns is not None:
        dns.fill(msg.assignments)
    return msg
