"""``orch node drain|pause|activate|label|rm|inspect|ls``: a node's availability and labels
(its spec, which only users write), and the removal of a node that is down.

Availability follows Swarm: DRAIN moves the node's tasks to other nodes, PAUSE keeps them
but places no new ones, ACTIVE takes new tasks again (moved tasks do not come back).
Labels are set and removed kubectl style in one call: ``zone=a`` sets, ``zone-`` removes.
Each change is printed as one line; ``orch nodes`` lists nodes as before.
"""

from __future__ import annotations

import argparse
from typing import Any

from orch.cli.commands import inspect, listings
from orch.cli.commands.listings import add_output_flag
from orch.cli.commands.removal import rm_command
from orch.cli.context import Context
from orch.errors import NotFoundError, ValidationError
from orch.proto import control_pb2, objects_pb2, types_pb2

# action -> (availability, past tense for the output line)
_AVAILABILITY = {
    "drain": (types_pb2.DRAIN, "drained (its tasks move to other nodes)"),
    "pause": (types_pb2.PAUSE, "paused (keeps its tasks, takes no new ones)"),
    "activate": (types_pb2.ACTIVE, "activated (takes new tasks)"),
}


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "node", parents=[common], help="drain, pause, activate, label, remove, inspect nodes"
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    ls = actions.add_parser("ls", parents=[common], help="list nodes (as `orch nodes`)")
    add_output_flag(ls)
    ls.set_defaults(func=listings.run_nodes)

    for action, (_, done) in _AVAILABILITY.items():
        a = actions.add_parser(action, parents=[common], help=f"mark nodes {done.split(' (')[0]}")
        a.add_argument("nodes", nargs="+", metavar="NODE", help="node id, id prefix or hostname")
        a.set_defaults(func=run_availability)

    label = actions.add_parser(
        "label", parents=[common], help="set (KEY=VALUE) or remove (KEY-) labels of a node"
    )
    label.add_argument("node", metavar="NODE", help="node id, id prefix or hostname")
    label.add_argument(
        "changes",
        nargs="+",
        type=label_arg,
        action=_DistinctKeys,
        metavar="KEY=VALUE|KEY-",
        help="KEY=VALUE sets a label, KEY- removes one",
    )
    label.set_defaults(func=run_label)

    rm = actions.add_parser("rm", parents=[common], help="remove nodes that are down")
    rm.add_argument("nodes", nargs="+", metavar="NODE", help="node id, id prefix or hostname")
    rm.add_argument(
        "-f", "--force", action="store_true", help="also remove a node that is not down"
    )
    rm.set_defaults(func=run_rm)

    show = actions.add_parser("inspect", parents=[common], help="show one node in full")
    show.add_argument("name", metavar="NODE", help="node id, id prefix or hostname")
    add_output_flag(show, default="yaml")
    show.set_defaults(func=inspect.run_inspect, kind="node")


def label_arg(text: str) -> tuple[str, str | None]:
    """``"zone=a"`` -> ("zone", "a"); ``"zone-"`` -> ("zone", None), a removal. The key is
    checked by the manager; here only the shape, so a typo is a usage error."""
    key, eq, value = text.partition("=")
    if eq:
        if not key:
            raise argparse.ArgumentTypeError(f"{text!r}: the label key is empty")
        return key, value
    if text.endswith("-") and len(text) > 1:
        return text[:-1], None
    raise argparse.ArgumentTypeError(
        f"{text!r}: expected KEY=VALUE to set a label or KEY- to remove one"
    )


class _DistinctKeys(argparse.Action):
    """Rejects a key given twice (``zone=a zone-``): which one was meant is a guess."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        keys = [key for key, _ in values]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            parser.error(f"label given more than once: {', '.join(repeated)}")
        setattr(namespace, self.dest, values)


def label_request(node: str, changes: list[tuple[str, str | None]]) -> Any:
    """The UpdateNodeRequest for ``orch node label``."""
    request = control_pb2.UpdateNodeRequest(id=node)
    for key, value in changes:
        if value is None:
            request.remove_labels.append(key)
        else:
            request.add_labels[key] = value
    return request


def _name(node: objects_pb2.Node, given: str) -> str:
    return node.description.hostname or node.id or given


def run_availability(ctx: Context) -> int:
    """Sets the availability of each node in turn; a node that is missing or ambiguous is
    reported and the rest still change. Exit 1 when any did not."""
    availability, done = _AVAILABILITY[ctx.args.action]
    status = 0
    for given in ctx.args.nodes:
        request = control_pb2.UpdateNodeRequest(id=given, availability=availability)
        try:
            node = ctx.client().call("UpdateNode", request)
        except (NotFoundError, ValidationError) as exc:
            for line in exc.problems if isinstance(exc, ValidationError) else [str(exc)]:
                ctx.err.write(f"orch: {line}\n")
            status = 1
            continue
        ctx.out.write(f"node/{_name(node, given)} {done}\n")
    return status


def run_label(ctx: Context) -> int:
    from orch.manifests.validate import node_label_problems

    changes: list[tuple[str, str | None]] = ctx.args.changes
    request = label_request(ctx.args.node, changes)
    problems = node_label_problems(request.add_labels, request.remove_labels)
    if problems:  # what the manager would refuse
        raise ValidationError(problems)
    node = ctx.client().call("UpdateNode", request)
    name = _name(node, ctx.args.node)
    for key, value in changes:
        if value is None:
            ctx.out.write(f"node/{name} label {key} removed\n")
        else:
            ctx.out.write(f"node/{name} label {key}={value} set\n")
    return 0


# One missing or not down is reported and the rest still go, as `docker node rm` does.
run_rm = rm_command(
    "node",
    "nodes",
    "RemoveNode",
    lambda ctx, node: control_pb2.RemoveNodeRequest(id=node, force=ctx.args.force),
)
