"""Small shared facts about the API objects: ids, timestamps, state predicates, and the
network vocabulary.

One place for what every layer asks of a Task ("is it over?", "is it ready?", "which
networks is it on?") and for the names and rules of networks (the built-in networks, the
MAC that goes with an address), so the manager, the agent, the manifests and the CLI
agree on the answers. It stands just above proto/ and below everything else, so any
layer may import it (overlay/ too, for the network names and the MAC rule).
"""

from __future__ import annotations

import ipaddress
import secrets
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from orch.proto import objects_pb2, specs_pb2, types_pb2

TaskState = types_pb2.TaskState

# States a task cannot leave: the container is gone or was never made.
TERMINAL_STATES = frozenset(
    {
        types_pb2.COMPLETE,
        types_pb2.SHUTDOWN,
        types_pb2.FAILED,
        types_pb2.REJECTED,
        types_pb2.ORPHANED,
    }
)


TASK_TEMPLATE_FIELDS = ("container", "resources", "networks", "ports", "placement")
"""ServiceSpec fields copied into every task: a change of any of them needs new tasks (a
rolling update); replicas, labels and the restart policy do not. The updater decides
with it and the CLI tells from it whether an apply started a rollout."""


def new_id() -> str:
    """A 25-character lowercase id, like swarmkit's (random, base-36)."""
    n = secrets.randbits(128)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    while len(out) < 25:
        n, r = divmod(n, 36)
        out.append(digits[r])
    return "".join(out)


def timestamp(when: datetime | None = None) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when or datetime.now(UTC))
    return ts


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The time of an unset Timestamp: older than anything that happened."""


def time_of(msg: Message, name: str) -> datetime | None:
    """The Timestamp field ``name`` of ``msg`` as an aware datetime, or None when unset."""
    return getattr(msg, name).ToDatetime(tzinfo=UTC) if msg.HasField(name) else None


def created_at(task: objects_pb2.Task) -> datetime:
    return time_of(task.meta, "created_at") or EPOCH


def is_terminal(state: int) -> bool:
    return state in TERMINAL_STATES


def is_live(task: objects_pb2.Task) -> bool:
    """Desired to run and not yet ended: the task that currently holds its slot."""
    return task.desired_state == types_pb2.RUNNING and not is_terminal(task.status.state)


def is_current(task: objects_pb2.Task) -> bool:
    """Desired to run, or not yet ended (still stopping): the tasks `orch ps` shows
    without --all, and the ones that keep their node in a network's peers and DNS."""
    return task.desired_state == types_pb2.RUNNING or not is_terminal(task.status.state)


def state_name(state: int) -> str:
    return types_pb2.TaskState.Name(state).lower() if state else "unknown"


# Health states that mean "nothing is checked": no health check, or none reported.
_UNCHECKED = frozenset({types_pb2.HEALTH_UNSPECIFIED, types_pb2.HEALTH_NONE})


def is_ready(task: objects_pb2.Task) -> bool:
    """RUNNING, and HEALTHY when it has a health check (without one, a task that reports a
    health at all must report HEALTHY): the task serves. The rolling updater waits for it
    before the next batch; DNS answers with ready tasks that are meant to run."""
    if task.status.state != types_pb2.RUNNING:
        return False
    health = task.status.health
    if task.container.HasField("healthcheck"):
        return health == types_pb2.HEALTH_HEALTHY
    return health == types_pb2.HEALTH_HEALTHY or health in _UNCHECKED


# -- networks ---------------------------------------------------------------------------

BRIDGE = "bridge"
"""The built-in per-node network, addressed by each agent; a task that names no network
is on it."""
HOST = "host"
"""The built-in network that is the node's own stack (no netns of the container's own)."""
NONE = "none"
"""The built-in network of loopback only."""
BUILTIN_NETWORKS = (BRIDGE, HOST, NONE)
"""Networks that exist on every node without being created; their names are reserved.
Every other network is a cluster (overlay) network whose addresses the manager allocates."""

HasNetworks = objects_pb2.Task | specs_pb2.ServiceSpec


def networks_of(holder: HasNetworks) -> list[str]:
    """The networks a task (or service spec) declares, in order (eth0 first); none listed
    means the local bridge."""
    return [n.target for n in holder.networks] or [BRIDGE]


def cluster_networks(holder: HasNetworks) -> list[str]:
    """The declared networks that are not built in, in order: those that need an address
    from the manager's allocator."""
    return [name for name in networks_of(holder) if name not in BUILTIN_NETWORKS]


def mac_for(address: str | ipaddress.IPv4Address) -> str:
    """Docker's rule: 02:42 and the four octets of the IPv4 address ("10.0.0.2" or
    "10.0.0.2/24"). A MAC that follows the address is unique wherever the address is, and
    keeps the neighbour caches of peers right when an address moves to a new container."""
    octets = ipaddress.IPv4Address(str(address).split("/")[0]).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)
