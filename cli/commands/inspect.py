"""``orch inspect service|task|node|network NAME``: one whole object, YAML by default."""

from __future__ import annotations

import argparse
from typing import Any

from orch.cli.commands.listings import add_output_flag
from orch.cli.context import Context
from orch.cli.output import emit
from orch.cli.views import message_to_plain
from orch.proto import control_pb2

# kind -> (rpc, request builder). Tasks take an id or unique prefix; nodes also a hostname.
_GETTERS = {
    "service": ("GetService", lambda name: control_pb2.GetServiceRequest(name=name)),
    "task": ("GetTask", lambda name: control_pb2.GetTaskRequest(id=name)),
    "node": ("GetNode", lambda name: control_pb2.GetNodeRequest(id=name)),
    "network": ("GetNetwork", lambda name: control_pb2.GetNetworkRequest(name=name)),
}


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("inspect", parents=[common], help="show one object in full")
    p.add_argument("kind", choices=sorted(_GETTERS), help="what kind of object")
    p.add_argument(
        "name",
        metavar="NAME",
        help="service name, task id (prefix), node id or hostname, network name",
    )
    add_output_flag(p, default="yaml")
    p.set_defaults(func=run_inspect)


def run_inspect(ctx: Context) -> int:
    method, build = _GETTERS[ctx.args.kind]
    found = ctx.client().call(method, build(ctx.args.name))
    emit(ctx.out, ctx.args.output, message_to_plain(found))
    return 0
