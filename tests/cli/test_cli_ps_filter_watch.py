"""`orch ps --filter` (docker's semantics: OR within a key, AND across keys) and
`orch ps --watch` (polls ListTasks, prints again only on change)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal

import pytest

from orch.cli import filters
from orch.proto import types_pb2

RECORDS = [
    {"id": "t1", "service": "web", "node": "n1", "node_hostname": "node1", "state": "running"},
    {"id": "t2", "service": "web", "node": "n2", "node_hostname": "node2", "state": "failed"},
    {"id": "t3", "service": "api", "node": "n1", "node_hostname": "node1", "state": "running"},
    {"id": "t4", "service": "api", "node": "", "node_hostname": "", "state": "pending"},
]


def _ids(*texts: str) -> list[str]:
    wanted = filters.group([filters.parse_filter(t) for t in texts])
    return [r["id"] for r in RECORDS if filters.task_matches(r, wanted)]


def test_no_filter_keeps_everything() -> None:
    assert _ids() == ["t1", "t2", "t3", "t4"]


def test_values_of_one_key_are_alternatives() -> None:
    assert _ids("state=running", "state=pending") == ["t1", "t3", "t4"]


def test_different_keys_must_all_match() -> None:
    assert _ids("state=running", "service=api") == ["t3"]
    assert _ids("state=running", "state=failed", "service=web") == ["t1", "t2"]


def test_node_is_matched_by_id_or_hostname() -> None:
    assert _ids("node=node2") == ["t2"]
    assert _ids("node=n1", "service=web") == ["t1"]


def test_state_is_case_insensitive() -> None:
    assert _ids("state=RUNNING") == ["t1", "t3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour=red", "unknown filter key 'colour' (accepted: node, service, state)"),
        ("state", "expected state=VALUE"),
        ("service=", "expected service=VALUE"),
        ("state=sleeping", "unknown state (accepted: new, pending,"),
    ],
)
def test_bad_filters_are_refused(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        filters.parse_filter(text)


async def test_ps_filter_on_a_server(orch, fake_server) -> None:
    result = await orch("ps", "-f", "node=node2", "--manager", fake_server.address, "-o", "json")
    assert result.returncode == 0, result.stderr
    assert [(t["service"], t["slot"]) for t in json.loads(result.out)] == [("web", 2)]
    refused = await orch("ps", "--filter", "colour=red", "--manager", fake_server.address)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].endswith(
        "unknown filter key 'colour' (accepted: node, service, state)"
    )


async def test_ps_watch_prints_again_when_tasks_change(fake_server, orch_process) -> None:
    proc = await orch_process("ps", "--watch", "-o", "json", "--manager", fake_server.address)
    first = await asyncio.wait_for(_read_json(proc), 10)
    assert [t["state"] for t in first] == ["running", "running"]
    fake_server.control.tasks[1].status.state = types_pb2.FAILED
    second = await asyncio.wait_for(_read_json(proc), 10)
    assert sorted(t["state"] for t in second) == ["failed", "running"]
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 130
    # Unchanged polls print nothing: exactly the two frames came out.
    assert (await proc.stdout.read()).strip() == b""


async def _read_json(proc: asyncio.subprocess.Process) -> list[dict]:
    """One JSON frame: lines up to the closing bracket at the start of a line."""
    lines = []
    while True:
        line = (await proc.stdout.readline()).decode()
        assert line, "orch ps --watch ended early"
        if not lines and not line.strip():
            continue  # the blank line between frames
        lines.append(line)
        if line.startswith("]"):
            return json.loads("".join(lines))
