"""Commands that change desired state: apply, scale, rm."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orch.cli.commands.listings import add_output_flag
from orch.cli.commands.removal import rm_command
from orch.cli.context import Context
from orch.cli.output import emit
from orch.cli.views import apply_record, change_line, planned_table
from orch.errors import ValidationError
from orch.proto import control_pb2

_SCALE_ARG = re.compile(r"^([^=\s]+)=(\d+)$")
_UINT64_MAX = 2**64 - 1


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "apply", parents=[common], help="create or update services and networks from manifests"
    )
    p.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE|DIR",
        help="a manifest file or a directory of them (repeatable)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="report the changes and the tasks that would start, stop or stay pending "
        "(and where); write nothing",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="return once the changes are stored; do not follow the rolling updates",
    )
    add_output_flag(p)  # json or yaml: one record, and rollouts are not followed
    p.set_defaults(func=run_apply)

    p = subparsers.add_parser("scale", parents=[common], help="set the replicas of services")
    p.add_argument(
        "targets",
        nargs="+",
        type=scale_arg,
        action=_UniqueNames,
        metavar="SERVICE=REPLICAS",
    )
    p.set_defaults(func=run_scale)

    p = subparsers.add_parser("rm", parents=[common], help="remove services")
    p.add_argument("services", nargs="+", metavar="SERVICE")
    p.set_defaults(func=run_rm)


def scale_arg(text: str) -> tuple[str, int]:
    """``"web=5"`` -> ("web", 5); an argparse type, so bad input is a usage error."""
    match = _SCALE_ARG.match(text)
    if match is None or int(match.group(2)) > _UINT64_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SERVICE=REPLICAS with REPLICAS a whole number >= 0"
        )
    return match.group(1), int(match.group(2))


class _UniqueNames(argparse.Action):
    """Rejects ``web=2 web=3``: which one was meant is a guess the CLI should not make."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        names = [name for name, _ in values]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            parser.error(f"service given more than once: {', '.join(repeated)}")
        setattr(namespace, self.dest, values)


def run_apply(ctx: Context) -> int:
    # Imported here so that the listing commands start without loading the manifest code.
    from orch.manifests.loader import load_paths
    from orch.manifests.validate import apply_size_problems

    paths = [Path(p) for p in ctx.args.files]
    manifest = load_paths(paths)
    if not manifest.services and not manifest.networks:
        raise ValidationError(
            f"no services or networks found in {', '.join(str(p) for p in paths)}"
        )
    too_big = apply_size_problems([*manifest.networks, *manifest.services])
    if too_big:  # what the manager would refuse: one etcd transaction
        raise ValidationError(too_big)
    request = control_pb2.ApplyRequest(
        networks=manifest.networks, services=manifest.services, dry_run=ctx.args.dry_run
    )
    response = ctx.client().call("Apply", request)
    record = apply_record(response, dry_run=ctx.args.dry_run)
    if ctx.args.output != "table":
        emit(ctx.out, ctx.args.output, record)
        return 0
    for change in response.changes:
        ctx.out.write(change_line(change, dry_run=ctx.args.dry_run) + "\n")
    if record["tasks"]:
        ctx.out.write("\n")
        emit(ctx.out, "table", record["tasks"], planned_table)
    if record["note"]:
        ctx.out.write(f"({record['note']})\n")
    if ctx.args.dry_run or ctx.args.detach:
        return 0
    return follow_rollouts(ctx, response.changes)


def follow_rollouts(ctx: Context, changes: Sequence[control_pb2.Change]) -> int:
    """Follow the rolling updates the changes started (an update of what tasks run; a
    change of replicas alone starts none) until they end; 1 unless every one completed."""
    from orch.cli import rollout

    names = [
        c.name
        for c in changes
        if c.kind == "service" and c.action == "update" and rollout.replaces_tasks(c.fields)
    ]
    client = ctx.client()
    active = []
    for name in names:
        info = client.call("GetService", control_pb2.GetServiceRequest(name=name))
        if info.service.update_status.state in rollout.ACTIVE:
            active.append(name)
    if not active:
        return 0
    records = rollout.follow(client, active, ctx.out, now=ctx.now)
    return rollout.report_ends(records, ctx.err)


def run_scale(ctx: Context) -> int:
    from orch.manifests.validate import scale_problems

    targets: list[tuple[str, int]] = ctx.args.targets
    problems = scale_problems(dict(targets))  # what the manager would refuse
    if problems:
        raise ValidationError(problems)
    ctx.client().call("Scale", control_pb2.ScaleRequest(replicas=dict(targets)))
    for name, replicas in targets:
        ctx.out.write(f"{name} scaled to {replicas}\n")
    return 0


# One missing is reported and the rest still go, as `docker service rm` does.
run_rm = rm_command(
    "service", "services", "RemoveService", lambda _, n: control_pb2.RemoveServiceRequest(name=n)
)
