"""``orch ps --filter KEY=VALUE``, with docker's semantics: values given for one key are
alternatives (OR), different keys must all match (AND)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from orch.cli.views import task_state_name
from orch.proto.types_pb2 import TaskState

TASK_FILTER_KEYS = ("node", "service", "state")
TASK_STATES = tuple(
    task_state_name(v) for v in TaskState.values() if v != TaskState.TASK_STATE_UNSPECIFIED
)

Filters = dict[str, set[str]]


def parse_filter(text: str) -> tuple[str, str]:
    """One ``KEY=VALUE`` as argparse's ``type``: bad input is refused in one line."""
    key, sep, value = text.partition("=")
    key, value = key.strip().lower(), value.strip()
    if key not in TASK_FILTER_KEYS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown filter key {key!r} (accepted: {', '.join(TASK_FILTER_KEYS)})"
        )
    if not sep or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {key}=VALUE")
    if key == "state" and value.lower() not in TASK_STATES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown state (accepted: {', '.join(TASK_STATES)})"
        )
    return key, value.lower() if key == "state" else value


def group(pairs: Sequence[tuple[str, str]] | None) -> Filters:
    """(key, value) pairs -> key -> the values that may match."""
    filters: Filters = {}
    for key, value in pairs or ():
        filters.setdefault(key, set()).add(value)
    return filters


def task_matches(record: Mapping[str, Any], filters: Filters) -> bool:
    """Does a task record (views.task_record) pass every key of ``filters``? A node is
    named by id or hostname."""
    candidates = {
        "node": {record["node"], record["node_hostname"]} - {""},
        "service": {record["service"]},
        "state": {record["state"]},
    }
    return all(candidates[key] & values for key, values in filters.items())
