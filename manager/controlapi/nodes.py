"""Nodes in the Control API: resolving the name a person types, changing a node's spec
(availability, labels) and removing a node. Pure functions of the view; server.py
commits their ops with its retry-on-conflict loop, so each decision is made again over
the newer view when another writer (the dispatcher refreshing the node's status) won.

The node spec has one writer, the user: the dispatcher keeps ``spec`` as stored when it
refreshes ``status`` and ``description``. What availability means is decided elsewhere:
the scheduler places new tasks only on ACTIVE nodes, the orchestrator moves tasks off
DRAIN nodes. Removing a node deletes its key; the orchestrator treats the tasks that name
a node no longer known as lost (replaces them, and deletes them without waiting for a
stop no agent would report). A node that still has an agent session is refused unless
forced, like ``docker node rm``: its tasks would run twice until the agent learns.

Removing a node also denies it, in the same transaction: its certificates still verify
until they expire, so the node id goes on the deny list (``Kind.DENIED``), which every
manager checks on every call (manager/authz.py) and which closes the node's open session.
The entry lives on an etcd lease that ends with the node's last certificate; the list
holds at most ``MAX_DENIED`` entries.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from orch.errors import NotFoundError, PreconditionError, ValidationError
from orch.manager.controlapi.decision import Decision, InUseError, View, respecced
from orch.manager.state.api import MAX_DENIED, Delete, Kind, Update, Versioned
from orch.manifests import limits, validate
from orch.proto import control_pb2, objects_pb2, types_pb2

_AVAILABILITIES = (types_pb2.ACTIVE, types_pb2.PAUSE, types_pb2.DRAIN)


def resolve(view: View, ident: str) -> Versioned:
    """The node with id or hostname ``ident``, else the one whose id starts with it.
    NotFoundError when none, ValidationError when the prefix or hostname is ambiguous."""
    if not ident:
        raise ValidationError("a node id or hostname is required")
    items = view.items(Kind.NODE)
    exact = [v for v in items if v.obj.id == ident]
    exact = exact or [v for v in items if v.obj.description.hostname == ident]
    matches = exact or [v for v in items if v.obj.id.startswith(ident)]
    if not matches:
        raise NotFoundError(f"no such node: {ident}")
    if len(matches) > 1:
        raise ValidationError(f"node {ident!r} is ambiguous ({len(matches)} match)")
    return matches[0]


def check_update(request: control_pb2.UpdateNodeRequest) -> None:
    """ValidationError listing what is wrong with the request itself (before any read)."""
    problems = validate.node_label_problems(request.add_labels, request.remove_labels)
    if (
        request.availability != types_pb2.AVAILABILITY_UNSPECIFIED
        and request.availability not in _AVAILABILITIES
    ):
        problems.append(f"availability: unknown value {request.availability}")
    if problems:
        raise ValidationError(problems)


def updated(node: objects_pb2.Node, request: control_pb2.UpdateNodeRequest) -> objects_pb2.Node:
    """A copy of ``node`` with the request's spec changes; meta not yet touched. Labels are
    added first, then removed (a key in both ends up removed)."""
    out = objects_pb2.Node()
    out.CopyFrom(node)
    if request.availability != types_pb2.AVAILABILITY_UNSPECIFIED:
        out.spec.availability = request.availability
    for key, value in request.add_labels.items():
        out.spec.labels[key] = value
    for key in request.remove_labels:
        out.spec.labels.pop(key, None)
    return out


def decide_update(view: View, request: control_pb2.UpdateNodeRequest, now: datetime) -> Decision:
    """The guarded write of an UpdateNode over the view as it is now; ``result`` is the
    node as it will be. No ops when nothing changes (the node is returned as it is)."""
    current = resolve(view, request.id)
    node = updated(current.obj, request)
    if node.spec == current.obj.spec:
        return Decision(result=current.obj)
    # The request alone was checked; the count is of the labels the node would have.
    too_many = limits.too_many(node.spec.labels, limits.MAX_LABELS, "add_labels", "labels")
    if too_many and len(node.spec.labels) > len(current.obj.spec.labels):
        raise ValidationError(f"{too_many[0]} on a node")
    write = respecced(current, node.spec, now)
    return Decision([write], result=write.obj)


def decide_removal(
    view: View,
    request: control_pb2.RemoveNodeRequest,
    *,
    now: datetime,
    deny_for: timedelta,
    lease: int,
) -> Decision:
    """The delete of a node and its deny-list entry (on ``lease``, which ends ``deny_for``
    from ``now``), refused (InUseError: FAILED_PRECONDITION) unless it is DOWN or
    ``force`` is set, or when the deny list is full."""
    current = resolve(view, request.id)
    node: objects_pb2.Node = current.obj
    state = node.status.state
    if state != types_pb2.NODE_DOWN and not request.force:
        name = node.description.hostname or node.id
        raise InUseError(
            f"node {name} is {status_name(state)}; only a down node can be removed "
            "(drain it and stop its agent first, or use --force)"
        )
    denied = view.get(Kind.DENIED, node.id)
    if denied is None and len(view.items(Kind.DENIED)) >= MAX_DENIED:
        raise PreconditionError(
            f"the deny list holds {MAX_DENIED} removed nodes whose certificates have not "
            "expired yet: no more can be removed until some expire"
        )
    entry = objects_pb2.DeniedNode(
        id=node.id,
        hostname=node.description.hostname,
        denied_at=_timestamp(now),
        expires_at=_timestamp(now + deny_for),
    )
    return Decision(
        [
            Delete(Kind.NODE, current.key, current.mod_revision),
            Update(Kind.DENIED, entry, denied.mod_revision if denied else 0, lease=lease),
        ]
    )


def _timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def status_name(state: int) -> str:
    """``NODE_READY`` -> "ready"."""
    if state == types_pb2.NODE_STATUS_UNSPECIFIED or state not in types_pb2.NodeStatus.values():
        return "unknown"
    return types_pb2.NodeStatus.Name(state).removeprefix("NODE_").lower()
