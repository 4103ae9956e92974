"""Read-only listings: ls (services), ps (tasks), nodes. Each fetches, turns the protos
into records (views.py) and prints them in the form ``-o`` asks for."""

from __future__ import annotations

import argparse
import time
from typing import Any

from orch.cli import filters, views
from orch.cli.context import Context
from orch.cli.output import FORMATS, emit
from orch.proto import control_pb2

WATCH_INTERVAL = 1.0
"""Seconds between two ListTasks calls of `orch ps --watch` (no watch RPC exists)."""
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def add_output_flag(parser: argparse.ArgumentParser, default: str = "table") -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS if default == "table" else tuple(f for f in FORMATS if f != "table"),
        default=default,
        help=f"output format (default {default})",
    )


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("ls", parents=[common], help="list services")
    add_output_flag(p)
    p.set_defaults(func=run_ls)

    p = subparsers.add_parser("ps", parents=[common], help="list tasks")
    p.add_argument("service", nargs="?", metavar="SERVICE", help="only this service's tasks")
    p.add_argument(
        "-a", "--all", action="store_true", help="also tasks no longer desired to run (history)"
    )
    p.add_argument("--no-trunc", action="store_true", help="do not shorten ids and errors")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        type=filters.parse_filter,
        metavar="KEY=VALUE",
        help=f"only tasks matching; keys: {', '.join(filters.TASK_FILTER_KEYS)}; "
        "repeat a key for either value, different keys must all match",
    )
    p.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help=f"print again whenever the tasks change, until Ctrl-C (there is no watch API: "
        f"this asks the manager every {WATCH_INTERVAL:g}s)",
    )
    add_output_flag(p)
    p.set_defaults(func=run_ps)

    p = subparsers.add_parser("nodes", parents=[common], help="list nodes")
    add_output_flag(p)
    p.set_defaults(func=run_nodes)

    p = subparsers.add_parser("managers", parents=[common], help="list managers and the leader")
    add_output_flag(p)
    p.set_defaults(func=run_managers)


def run_ls(ctx: Context) -> int:
    response = ctx.client().call("ListServices", control_pb2.ListServicesRequest())
    records = sorted((views.service_record(s) for s in response.services), key=_by_name)
    emit(ctx.out, ctx.args.output, records, views.service_table)
    return 0


def run_ps(ctx: Context) -> int:
    if not ctx.args.watch:
        _emit_tasks(ctx, _task_records(ctx))
        return 0
    shown: list[dict[str, Any]] | None = None
    while True:  # ends with Ctrl-C (main turns it into exit 130)
        records = _task_records(ctx)
        if records != shown:
            if shown is not None:
                ctx.out.write(CLEAR_SCREEN if ctx.out.isatty() else "\n")
            _emit_tasks(ctx, records)
            shown = records
        time.sleep(WATCH_INTERVAL)


def _task_records(ctx: Context) -> list[dict[str, Any]]:
    request = control_pb2.ListTasksRequest(
        service=ctx.args.service or "", include_history=ctx.args.all
    )
    tasks = ctx.client().call("ListTasks", request).tasks
    hostnames = node_hostnames(ctx)
    wanted = filters.group(ctx.args.filter)
    records = [views.task_record(t, hostnames) for t in tasks]
    matching = [r for r in records if filters.task_matches(r, wanted)]
    return [dict(r) for r in views.sort_task_records(matching)]


def _emit_tasks(ctx: Context, records: list[dict[str, Any]]) -> None:
    now = ctx.now()
    emit(
        ctx.out,
        ctx.args.output,
        records,
        lambda rs: views.task_table(rs, now, truncate=not ctx.args.no_trunc),
    )


def run_nodes(ctx: Context) -> int:
    response = ctx.client().call("ListNodes", control_pb2.ListNodesRequest())
    records = [views.node_record(n) for n in response.nodes]
    records.sort(key=lambda r: (r["hostname"], r["id"]))
    emit(ctx.out, ctx.args.output, records, views.node_table)
    return 0


def run_managers(ctx: Context) -> int:
    response = ctx.client().call("ListManagers", control_pb2.ListManagersRequest())
    emit(ctx.out, ctx.args.output, views.manager_records(response), views.manager_table)
    return 0


def node_hostnames(ctx: Context) -> dict[str, str]:
    """Node id -> hostname, for naming where tasks run."""
    response = ctx.client().call("ListNodes", control_pb2.ListNodesRequest())
    return {n.id: n.description.hostname for n in response.nodes}


def _by_name(record: dict[str, Any]) -> str:
    return record["name"]
