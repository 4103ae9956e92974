"""``orch logs SERVICE|SERVICE.SLOT|TASK [-f] [--tail N]``.

Lines are written as the bytes the container wrote, to our stdout or stderr after the
stream they came from, each prefixed with where it came from, ``web.2@node1 | `` (the
shape `docker service logs` uses). The prefix needs node hostnames, which the log entries
do not carry: they are read once with ListNodes and again when an entry names a node not
seen yet (one that joined while following).
"""

from __future__ import annotations

import argparse
from typing import Any, BinaryIO

from orch.cli.commands.listings import node_hostnames
from orch.cli.context import Context
from orch.cli.views import ID_WIDTH
from orch.proto import control_pb2


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("logs", parents=[common], help="print a service's or a task's output")
    p.add_argument("target", metavar="SERVICE|SERVICE.SLOT|TASK")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument(
        "--tail",
        type=tail_arg,
        default=-1,
        metavar="N",
        help='lines per task from the end of the backlog ("all", the default, or a number)',
    )
    p.add_argument("--no-prefix", action="store_true", help="print the lines alone")
    p.set_defaults(func=run_logs)


def tail_arg(text: str) -> int:
    """ "all" -> -1 (the API's "everything"), or a whole number >= 0."""
    if text == "all":
        return -1
    if not text.isdigit() or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 0 or 'all'")
    return int(text)


def log_prefix(entry: control_pb2.LogEntry, hostnames: dict[str, str]) -> bytes:
    """``web.2@node1 | ``; a task without a slot is named by its short id."""
    slot = entry.slot or entry.task_id[:ID_WIDTH]
    node = hostnames.get(entry.node_id) or entry.node_id[:ID_WIDTH]
    return f"{entry.service}.{slot}@{node} | ".encode()


def run_logs(ctx: Context) -> int:
    args = ctx.args
    request = control_pb2.LogsRequest(target=args.target, follow=args.follow, tail=args.tail)
    hostnames = {} if args.no_prefix else node_hostnames(ctx)
    stdout: BinaryIO = ctx.out.buffer  # type: ignore[attr-defined]
    stderr: BinaryIO = ctx.err.buffer  # type: ignore[attr-defined]
    ctx.out.flush()
    ctx.err.flush()
    # Following has no deadline: it ends when the user stops it or the manager goes away.
    timeout = None if args.follow else ctx.settings.timeout
    entries = ctx.client().stream("Logs", request, timeout=timeout)
    try:
        for entry in entries:
            if not args.no_prefix and entry.node_id and entry.node_id not in hostnames:
                hostnames.update(node_hostnames(ctx))
                hostnames.setdefault(entry.node_id, "")  # ask once per unknown node
            prefix = b"" if args.no_prefix else log_prefix(entry, hostnames)
            sink = stderr if entry.stream == "stderr" else stdout
            sink.write(prefix + entry.line + b"\n")
            sink.flush()  # keeps stdout and stderr lines in order on one terminal
    finally:
        entries.close()
    return 0
