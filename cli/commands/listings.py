"""Read-only listings: ls (services), ps (tasks), nodes. Each fetches, turns the protos
into records (views.py) and prints them in the form ``-o`` asks for."""

from __future__ import annotations

import argparse
from typing import Any

from orch.cli import views
from orch.cli.context import Context
from orch.cli.output import FORMATS, emit
from orch.proto import control_pb2


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
    client = ctx.client()
    request = control_pb2.ListTasksRequest(
        service=ctx.args.service or "", include_history=ctx.args.all
    )
    tasks = client.call("ListTasks", request).tasks
    hostnames = node_hostnames(ctx)
    records = [
        dict(r) for r in views.sort_task_records([views.task_record(t, hostnames) for t in tasks])
    ]
    now = ctx.now()
    emit(
        ctx.out,
        ctx.args.output,
        records,
        lambda rs: views.task_table(rs, now, truncate=not ctx.args.no_trunc),
    )
    return 0


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
