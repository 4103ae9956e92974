"""Rolling updates: `orch rollout status SERVICE` and `orch rollback SERVICE`. (`orch
apply` follows the rollouts it starts with the same display, cli/rollout.py.)"""

from __future__ import annotations

import argparse
from typing import Any

from orch.cli import rollout
from orch.cli.commands.listings import add_output_flag
from orch.cli.context import Context
from orch.cli.output import emit
from orch.proto import control_pb2


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("rollout", parents=[common], help="rolling updates of services")
    sub = p.add_subparsers(dest="rollout_command", metavar="COMMAND", required=True)
    s = sub.add_parser(
        "status",
        parents=[common],
        help="where a service's rolling update stands (exit 1 when paused or rolled back)",
    )
    s.add_argument("service", metavar="SERVICE")
    add_output_flag(s)
    s.set_defaults(func=run_status)

    p = subparsers.add_parser(
        "rollback", parents=[common], help="return a service to its previous spec"
    )
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--detach", action="store_true", help="return at once; do not follow")
    p.set_defaults(func=run_rollback)


def _status_table(record: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    progress = (
        f"{record['updated']}/{record['total']} updated, {record['running']} running "
        f"({record['healthy']} healthy), {record['failed']} failed  "
        f"{rollout.bar(record['updated'], record['total'])}"
    )
    state = record["state"]
    if record["elapsed"]:
        state += f" ({record['elapsed']})"
    rows = [["service:", record["service"]], ["state:", state], ["progress:", progress]]
    if record["message"]:
        rows.append(["message:", record["message"]])
    return ["ROLLOUT", ""], rows


def run_status(ctx: Context) -> int:
    info = ctx.client().call("GetService", control_pb2.GetServiceRequest(name=ctx.args.service))
    record = rollout.rollout_record(info, ctx.now())
    if ctx.args.output == "table":
        _, rows = _status_table(record)
        width = max(len(r[0]) for r in rows)
        ctx.out.write("".join(f"{k.ljust(width)} {v}\n" for k, v in rows))
    else:
        emit(ctx.out, ctx.args.output, record)
    paused = record["state"] in ("paused", "rollback paused")
    return 1 if paused else 0


def run_rollback(ctx: Context) -> int:
    name = ctx.args.service
    ctx.client().call("Rollback", control_pb2.RollbackRequest(name=name))
    ctx.out.write(f"service/{name} rolling back\n")
    if ctx.args.detach:
        return 0
    records = rollout.follow(ctx.client(), [name], ctx.out, now=ctx.now)
    return rollout.report_ends(records, ctx.err, ok="rollback completed")
