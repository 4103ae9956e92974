"""Service discovery records as one node needs them: the pure core of the DNS part of a
dispatcher session.

Every agent answers DNS for its own containers, and a container may only learn about
services that share a network with it. So the dispatcher sends each node, per network
one of its tasks is on, the complete set of that network's endpoints; the agent decides
per query which of them the asker may see. Overlay networks span nodes (every endpoint
in the cluster); the built-in ``bridge`` network is per node (only the node's own tasks
share it). ``host`` and ``none`` have no records: a host-network container uses the
host's resolvers, a ``none`` one reaches nobody.

An endpoint is a task holding an address on the network that has not ended. It is
*answerable* when it is ready (``model.is_ready``: it runs, and is healthy where it has a
health check) and is meant to run. The unanswerable ones are sent too: they tell the agent
that the service exists on the network, so a name whose tasks are all starting or
unhealthy gets an empty answer (NOERROR), and only names of services the asker cannot
reach at all get NXDOMAIN.

A node takes part in a network as soon as one of its live tasks *declares* it (the task's
``networks``, empty = bridge), before any address is known: the records then travel in
the same session message as the task itself, so the agent knows them before the
container starts and asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orch import model
from orch.manager.dispatcher.netpeers import diff_by_network
from orch.manager.state.api import Event, Kind
from orch.proto import dispatcher_pb2, objects_pb2, types_pb2

Task = objects_pb2.Task


def answerable(task: Task) -> bool:
    """The task is one DNS answers with: ready and meant to run. A task being shut down
    drops out at once, before it stops."""
    return model.is_ready(task) and task.desired_state == types_pb2.RUNNING


def _has_records(name: str, networks: Mapping[str, objects_pb2.Network]) -> bool:
    # Of the built-in networks only the bridge has records (host and none have none).
    return name == model.BRIDGE or name in networks


def node_networks(
    node_id: str, tasks: Iterable[Task], networks: Mapping[str, objects_pb2.Network]
) -> set[str]:
    """The networks with records that a live task of ``node_id`` declares."""
    found: set[str] = set()
    for task in tasks:
        if task.node_id == node_id and model.is_current(task):
            found.update(n for n in model.networks_of(task) if _has_records(n, networks))
    return found


def records_for_node(
    node_id: str,
    tasks: Iterable[Task],
    networks: Mapping[str, objects_pb2.Network],
    only: set[str] | None = None,
) -> dict[str, dispatcher_pb2.DnsRecords]:
    """The DNS records of every network ``node_id`` takes part in (restricted to ``only``
    when given), endpoints sorted by (service, slot, task id)."""
    tasks = list(tasks)
    mine = node_networks(node_id, tasks, networks)
    if only is not None:
        mine &= only
    found: dict[str, list[dispatcher_pb2.DnsEndpoint]] = {name: [] for name in mine}
    for task in tasks:
        if model.is_terminal(task.status.state):
            continue
        for attachment in task.attachments:
            name = attachment.network
            if name not in found or not attachment.addresses:
                continue
            if name == model.BRIDGE and task.node_id != node_id:
                continue  # another node's bridge: unreachable from here
            found[name].append(
                dispatcher_pb2.DnsEndpoint(
                    service=task.service_name,
                    slot=task.slot,
                    task_id=task.id,
                    address=attachment.addresses[0].split("/")[0],
                    answerable=answerable(task),
                )
            )
    return {
        name: dispatcher_pb2.DnsRecords(
            network=name,
            endpoints=sorted(found[name], key=lambda e: (e.service, e.slot, e.task_id)),
        )
        for name in sorted(found)
    }


def affected_networks(
    events: Iterable[Event], sent: Iterable[str], networks: Mapping[str, objects_pb2.Network]
) -> set[str]:
    """The networks whose records a batch of events may have changed, for a node that
    was told about the networks ``sent``. Node events change no record."""
    affected: set[str] = set()
    known = set(sent)
    for ev in events:
        if ev.kind is Kind.TASK:
            if ev.obj is None:
                affected |= known  # which networks it was on is gone with it
            else:
                names = set(model.networks_of(ev.obj)) | {a.network for a in ev.obj.attachments}
                affected |= {n for n in names if _has_records(n, networks)} | (names & known)
        elif ev.kind is Kind.NETWORK:
            affected.add(ev.key.rsplit("/", 1)[1])
    return affected


@dataclass
class RecordChanges:
    """What to send: networks whose records are new or changed, networks dropped, and the
    names of every user network of the cluster when they changed (else None)."""

    records: list[dispatcher_pb2.DnsRecords]
    removed: list[str]
    network_names: list[str] | None = None

    def __bool__(self) -> bool:
        return bool(self.records or self.removed or self.network_names is not None)

    def fill(self, msg: dispatcher_pb2.Assignments) -> None:
        """Put these changes into a session message."""
        msg.dns.extend(self.records)
        msg.removed_dns.extend(sorted(self.removed))
        if self.network_names is not None:
            msg.dns_network_names.SetInParent()  # present even when there are none
            msg.dns_network_names.names.extend(self.network_names)


class DnsFeed:
    """The DNS part of one session: what the agent was told, and what to tell it next."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.sent: dict[str, dispatcher_pb2.DnsRecords] = {}
        self.sent_names: list[str] = []

    def full(
        self, tasks: Iterable[Task], networks: Mapping[str, objects_pb2.Network]
    ) -> RecordChanges:
        """Everything, for a full assignment set."""
        self.sent = records_for_node(self.node_id, tasks, networks)
        self.sent_names = sorted(networks)
        return RecordChanges(list(self.sent.values()), [], list(self.sent_names))

    def changes(
        self,
        events: list[Event],
        tasks: Iterable[Task],
        networks: Mapping[str, objects_pb2.Network],
    ) -> RecordChanges:
        """What a batch of events changed, recomputed only for the networks it touched."""
        affected = affected_networks(events, self.sent, networks)
        result = RecordChanges([], [])
        if affected:
            fresh = records_for_node(self.node_id, tasks, networks, affected)
            result = RecordChanges(*diff_by_network(self.sent, fresh, affected))
        names = sorted(networks)
        if names != self.sent_names:
            self.sent_names = names
            result.network_names = list(names)
        return result
