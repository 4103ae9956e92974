"""``orch version``: the client's version and, when a manager answers, the cluster's.

The cluster's side is the Version RPC of the manager that answers first. A manager that
cannot be reached, or that predates the RPC, leaves ``cluster`` empty and says why; the
command still succeeds, since the client's version is always known.
"""

from __future__ import annotations

import argparse
from typing import Any

from orch.cli.commands.listings import add_output_flag
from orch.cli.context import Context
from orch.cli.output import emit
from orch.errors import OrchError
from orch.proto import control_pb2
from orch.version import version as client_version


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "version",
        parents=[common],
        help="the client's version, and the cluster's when a manager answers",
    )
    add_output_flag(p)
    p.set_defaults(func=run_version)


def run_version(ctx: Context) -> int:
    record: dict[str, Any] = {"client": {"version": client_version()}, "cluster": None}
    try:
        client = ctx.client()
        response = client.call("Version", control_pb2.VersionRequest())
        record["cluster"] = {"version": response.version, "manager": client.addresses[0]}
    except OrchError as exc:
        record["cluster_error"] = str(exc).splitlines()[0]
    emit(ctx.out, ctx.args.output, record, _table)
    return 0


def _table(record: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    cluster = record["cluster"]
    rows = [["client", record["client"]["version"], ""]]
    if cluster is not None:
        rows.append(["cluster", cluster["version"], f"manager at {cluster['manager']}"])
    else:
        rows.append(["cluster", "-", record["cluster_error"]])
    return ["", "VERSION", "FROM"], rows
