"""Small shared facts about the API objects: ids, timestamps, state predicates.

One place for what every layer asks of a Task ("is it over?", "is it live?"), so the
manager, the agent and the CLI agree on the answers.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from orch.proto import objects_pb2, types_pb2

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


def to_datetime(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def is_terminal(state: int) -> bool:
    return state in TERMINAL_STATES


def is_live(task: objects_pb2.Task) -> bool:
    """Desired to run and not yet ended: the task that currently holds its slot."""
    return task.desired_state == types_pb2.RUNNING and not is_terminal(task.status.state)


def state_name(state: int) -> str:
    return types_pb2.TaskState.Name(state).lower() if state else "unknown"
