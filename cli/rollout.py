"""Rolling updates as a person sees them: one line per service, and the loop that follows
a rollout until it ends (`orch apply`, `orch rollback`).

Following polls GetService (every `poll` seconds): the Control API has no watch for
clients, and a CLI that asks four times a second for one small message costs nothing. On
a terminal the lines are redrawn in place; otherwise a line is printed each time it
changes, so a log of the rollout stays readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

from orch import model
from orch.cli.client import ControlClient
from orch.cli.views import human_duration, ts_to_datetime
from orch.proto import control_pb2, objects_pb2

UpdateStatus = objects_pb2.UpdateStatus
ACTIVE = (UpdateStatus.UPDATING, UpdateStatus.ROLLING_BACK)
BAR_WIDTH = 12


def replaces_tasks(fields: Sequence[str]) -> bool:
    """Whether an Apply that changed these spec fields ("replicas", "container.image")
    started a rolling update."""
    return any(f.split(".")[0] in model.TASK_TEMPLATE_FIELDS for f in fields)


def state_name(state: int) -> str:
    """ "updating", "rollback completed", ... ("none" when no update ever ran)."""
    if not state:
        return "none"
    return UpdateStatus.State.Name(state).lower().replace("_", " ")


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """[#####-------]: the share of updated slots."""
    filled = width if total == 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def rollout_record(info: control_pb2.ServiceInfo, now: datetime) -> dict[str, Any]:
    """The rollout of one service as plain data (`orch rollout status -o json`)."""
    status = info.service.update_status
    r = info.rollout
    started = ts_to_datetime(status.started_at) if status.HasField("started_at") else None
    ended = ts_to_datetime(status.completed_at) if status.HasField("completed_at") else None
    return {
        "service": info.service.spec.name,
        "state": state_name(status.state),
        "updated": r.updated,
        "total": r.total,
        "running": r.running,
        "healthy": r.healthy,
        "failed": r.failed,
        "message": status.message,
        "started_at": started.isoformat() if started else None,
        "completed_at": ended.isoformat() if ended else None,
        "elapsed": human_duration(((ended or now) - started).total_seconds()) if started else None,
    }


def rollout_line(record: dict[str, Any]) -> str:
    """'web: 4/6 updated, 6 running, 0 failed  [########----]  updating'."""
    line = (
        f"{record['service']}: {record['updated']}/{record['total']} updated, "
        f"{record['running']} running, {record['failed']} failed  "
        f"{bar(record['updated'], record['total'])}  {record['state']}"
    )
    if record["state"] not in ("updating", "rolling back") and record["elapsed"]:
        line += f" after {record['elapsed']}"
    return line


def follow(
    client: ControlClient,
    names: Sequence[str],
    out: TextIO,
    *,
    now: Callable[[], datetime],
    poll: float = 0.25,
    tty: bool | None = None,
) -> list[dict[str, Any]]:
    """Print the rollouts of `names` until none is active; returns their last records."""
    tty = out.isatty() if tty is None else tty
    last: dict[str, dict[str, Any]] = {}
    shown: dict[str, str] = {}
    drawn = 0
    while True:
        for name in names:
            if name in last and last[name]["state"] not in ("updating", "rolling back"):
                continue
            info = client.call("GetService", control_pb2.GetServiceRequest(name=name))
            last[name] = rollout_record(info, now())
        lines = [rollout_line(last[n]) for n in names]
        if tty:
            if drawn:
                out.write(f"\x1b[{drawn}A")
            out.write("".join(f"\r\x1b[K{line}\n" for line in lines))
            drawn = len(lines)
        else:
            for name, line in zip(names, lines, strict=True):
                if shown.get(name) != line:
                    out.write(line + "\n")
                    shown[name] = line
        out.flush()
        if all(last[n]["state"] not in ("updating", "rolling back") for n in names):
            return [last[n] for n in names]
        time.sleep(poll)


def report_ends(records: Sequence[dict[str, Any]], err: TextIO, ok: str = "completed") -> int:
    """Say why each rollout that did not end in state `ok` ended so; 0 when all did."""
    status = 0
    for r in records:
        if r["state"] != ok:
            err.write(f"orch: {r['service']}: {r['state']}: {r['message']}\n")
            status = 1
    return status
