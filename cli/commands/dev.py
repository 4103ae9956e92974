"""``orch dev up|down``: a real multi-host cluster on this machine (localcluster).

Kept thin on purpose: it parses arguments, calls ``orch.localcluster.cluster.up(settings)``
or ``down(state_dir)`` and prints a summary of what they return. Flags not given leave
ClusterSettings' own defaults in force. The cluster module is imported when the command
runs, so the rest of the CLI does not load it.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from orch.cli import contexts
from orch.cli.config import default_state_dir
from orch.cli.context import Context
from orch.errors import OrchError

DEV_CONTEXT = "dev"


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    dev = subparsers.add_parser("dev", help="run a local multi-host cluster on this machine")
    sub = dev.add_subparsers(dest="dev_command", metavar="COMMAND", required=True)

    p = sub.add_parser("up", help="start a local cluster (etcd, managers, agents in netns)")
    p.add_argument(
        "--nodes", type=_positive, help="hosts to start, each a netns with an agent (default 3)"
    )
    p.add_argument("--managers", type=_positive, help="managers to start")
    p.add_argument(
        "--etcd-members",
        type=_odd,
        help="etcd members forming the cluster store: 1 (default), or 3 to try member loss",
    )
    _add_state_dir(p)
    p.set_defaults(func=run_up)

    p = sub.add_parser("down", help="stop the local cluster and remove what it made")
    _add_state_dir(p)
    p.set_defaults(func=run_down)


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"where the cluster keeps its state (default $ORCH_STATE_DIR or {default_state_dir({})})",
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return int(text)


def _odd(text: str) -> int:
    if not text.isdigit() or int(text) % 2 == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an odd number (1, 3 or 5)")
    return int(text)


def _cluster_module() -> Any:
    try:
        from orch.localcluster import cluster
    except ImportError as exc:
        raise OrchError(f"the local cluster is not available: {exc}") from exc
    return cluster


def run_up(ctx: Context) -> int:
    cluster = _cluster_module()
    given = {
        "nodes": ctx.args.nodes,
        "managers": ctx.args.managers,
        "etcd_members": ctx.args.etcd_members,
    }
    settings = cluster.ClusterSettings(
        state_dir=ctx.args.state_dir or default_state_dir(ctx.env),
        **{k: v for k, v in given.items() if v is not None},
    )
    record = asyncio.run(cluster.up(settings))
    ctx.out.write(up_summary(record))
    # Like kind and minikube: the cluster just made becomes the current context, so the
    # next command talks to it even when another context was current.
    dev_context = contexts.ClusterContext(
        DEV_CONTEXT, tuple(record.managers), getattr(record, "tls_dir", "")
    )
    config = contexts.put(ctx.env, dev_context, make_current=True)
    ctx.out.write(f"context:   {DEV_CONTEXT} (now current, in {config.path})\n")
    return 0


def run_down(ctx: Context) -> int:
    cluster = _cluster_module()
    state_dir = ctx.args.state_dir or default_state_dir(ctx.env)
    if asyncio.run(cluster.down(state_dir)):
        ctx.out.write(f"local cluster in {state_dir} stopped and removed\n")
    else:
        ctx.out.write(f"no local cluster in {state_dir}\n")
    return 0


def up_summary(record: Any) -> str:
    """What a person needs next: where the managers listen, which hosts run (with their
    underlay address and netns, for `nsenter --net=/run/netns/<netns>`)."""
    agents = getattr(record, "agents", [])
    hosts = [
        f"{a.get('hostname', '?')}  {a['address']}  (netns {a['netns']})" if "netns" in a
        else a.get("hostname", "?")
        for a in agents
    ]  # fmt: skip
    lines = [
        f"local cluster {record.prefix} is up (state in {record.state_dir})",
        f"managers:  {','.join(record.managers)}",
        *([f"etcd:      {record.etcd}"] if getattr(record, "etcd", "") else []),
        *(
            [f"etcdctl:   etcdctl --endpoints {record.etcd} {' '.join(record.etcdctl)}"]
            if getattr(record, "etcdctl", None)
            else []
        ),
        *([f"admin TLS: {record.tls_dir}"] if getattr(record, "tls_dir", "") else []),
        *(f"{'nodes:' if i == 0 else '':11}{h}" for i, h in enumerate(hosts)),
    ]
    underlay = getattr(record, "underlay", None)
    if underlay:
        lines.append(f"underlay:  {underlay['subnet']} on bridge {underlay['bridge']}")
    if getattr(record, "registry", ""):
        mirror = getattr(record, "registry_mirror", "")
        lines.append(f"registry:  {record.registry}" + (f" (served at {mirror})" if mirror else ""))
    return "\n".join(lines) + "\n"
