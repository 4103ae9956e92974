"""``orch completion bash|zsh`` prints a completion script generated from the parser
(completion.py); the hidden ``orch __complete services|tasks|nodes`` is what that script
runs to complete names from the cluster."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from orch.cli.completion import NAME_KINDS, bash_script, zsh_script
from orch.cli.context import Context
from orch.errors import OrchError
from orch.proto import control_pb2

COMPLETE_TIMEOUT = 1.0
"""Seconds a completion may wait for the cluster: a slow TAB is worse than no names."""


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "completion",
        help="print a shell completion script",
    )
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(func=run_completion)

    # No help=: argparse then leaves it out of `orch --help`.
    p = subparsers.add_parser("__complete", parents=[common])
    p.add_argument("kind", choices=NAME_KINDS)
    p.set_defaults(func=run_complete)


def run_completion(ctx: Context) -> int:
    assert ctx.parser is not None, "main() passes the parser"
    script = bash_script if ctx.args.shell == "bash" else zsh_script
    ctx.out.write(script(ctx.parser))
    return 0


def run_complete(ctx: Context) -> int:
    """Names of one kind, one a line; nothing (and success) when the cluster does not
    answer within COMPLETE_TIMEOUT, since a completion must never print an error."""
    ctx.settings = replace(
        ctx.settings,
        timeout=min(ctx.settings.timeout, COMPLETE_TIMEOUT),
        connect_timeout=min(ctx.settings.connect_timeout, COMPLETE_TIMEOUT),
    )
    try:
        names = _names(ctx, ctx.args.kind)
    except OrchError:
        return 0
    ctx.out.write("".join(f"{name}\n" for name in sorted(set(names))))
    return 0


def _names(ctx: Context, kind: str) -> list[str]:
    client = ctx.client()
    if kind == "services":
        response = client.call("ListServices", control_pb2.ListServicesRequest())
        return [info.service.spec.name for info in response.services]
    if kind == "nodes":
        response = client.call("ListNodes", control_pb2.ListNodesRequest())
        return [n.description.hostname or n.id for n in response.nodes]
    response = client.call("ListTasks", control_pb2.ListTasksRequest())
    return [f"{t.service_name}.{t.slot}" for t in response.tasks if t.slot] + [
        t.id for t in response.tasks
    ]
