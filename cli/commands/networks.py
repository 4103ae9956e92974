"""``orch network ls|inspect|rm``: the cluster's overlay networks. Networks are created by
``orch apply`` (a ``kind: Network`` document); removal is refused while a service uses
the network, and the manager's message says which."""

from __future__ import annotations

import argparse
from typing import Any

from orch.cli import views
from orch.cli.commands.listings import add_output_flag
from orch.cli.commands.removal import rm_command
from orch.cli.context import Context
from orch.cli.output import emit
from orch.proto import control_pb2


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("network", parents=[common], help="list, inspect, remove networks")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    ls = actions.add_parser("ls", parents=[common], help="list networks")
    add_output_flag(ls)
    ls.set_defaults(func=run_ls)

    inspect = actions.add_parser("inspect", parents=[common], help="show one network in full")
    inspect.add_argument("name", metavar="NAME")
    add_output_flag(inspect, default="yaml")
    inspect.set_defaults(func=run_inspect)

    rm = actions.add_parser("rm", parents=[common], help="remove networks no service uses")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(func=run_rm)


def run_ls(ctx: Context) -> int:
    response = ctx.client().call("ListNetworks", control_pb2.ListNetworksRequest())
    records = sorted((views.network_record(n) for n in response.networks), key=lambda r: r["name"])
    emit(ctx.out, ctx.args.output, records, views.network_table)
    return 0


def run_inspect(ctx: Context) -> int:
    info = ctx.client().call("GetNetwork", control_pb2.GetNetworkRequest(name=ctx.args.name))
    emit(ctx.out, ctx.args.output, views.message_to_plain(info))
    return 0


# One missing or in use is reported and the rest still go, as `docker network rm` does.
run_rm = rm_command(
    "network", "names", "RemoveNetwork", lambda _, name: control_pb2.RemoveNetworkRequest(name=name)
)
