"""``orch context ls|use|add|rm|current``: named clusters in the config file (contexts.py).

None of these talk to a manager; ``current`` shows which addresses the next command would
use and why (flag > environment > current context > the local cluster's file).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from orch.cli import contexts
from orch.cli.addresses import parse_addresses
from orch.cli.commands.listings import add_output_flag
from orch.cli.config import ENV_MANAGER, resolve_managers
from orch.cli.context import Context
from orch.cli.output import emit
from orch.errors import OrchError


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "context",
        help="named clusters: which managers commands talk to",
    )
    sub = p.add_subparsers(dest="context_command", metavar="COMMAND", required=True)

    p = sub.add_parser("ls", help="list contexts (* marks the current one)")
    add_output_flag(p)
    p.set_defaults(func=run_ls)

    p = sub.add_parser("use", help="make a context the current one")
    p.add_argument("name", metavar="NAME", type=_name)
    p.set_defaults(func=run_use)

    p = sub.add_parser("add", help="add a context (an existing name is refused)")
    p.add_argument("name", metavar="NAME", type=_name)
    p.add_argument(
        "--manager",
        required=True,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the cluster's manager address(es)",
    )
    p.add_argument("--tls-dir", default="", metavar="DIR", help="where its TLS files are")
    p.add_argument("--use", action="store_true", help="also make it the current context")
    p.set_defaults(func=run_add)

    p = sub.add_parser("rm", help="remove a context")
    p.add_argument("name", metavar="NAME", type=_name)
    p.set_defaults(func=run_rm)

    p = sub.add_parser(
        "current",
        parents=[common],
        help=f"the addresses commands use, and why (--manager > ${ENV_MANAGER} > context)",
    )
    add_output_flag(p)
    p.set_defaults(func=run_current)


def _name(text: str) -> str:
    try:
        return contexts.check_name(text)
    except OrchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def run_ls(ctx: Context) -> int:
    config = contexts.load(ctx.env)
    records = [
        {
            "name": c.name,
            "current": c.name == config.current,
            "managers": list(c.managers),
            "tls_dir": c.tls_dir,
        }
        for c in sorted(config.contexts.values(), key=lambda c: c.name)
    ]
    emit(ctx.out, ctx.args.output, records, _table)
    return 0


def _table(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [
            ("* " if r["current"] else "  ") + r["name"],
            ",".join(r["managers"]),
            r["tls_dir"] or "-",
        ]
        for r in records
    ]
    return ["  NAME", "MANAGERS", "TLS DIR"], rows


def run_use(ctx: Context) -> int:
    config = contexts.load(ctx.env)
    _existing(config, ctx.args.name)
    config.current = ctx.args.name
    contexts.save(config)
    ctx.out.write(f"current context: {ctx.args.name}\n")
    return 0


def run_add(ctx: Context) -> int:
    config = contexts.load(ctx.env)
    if ctx.args.name in config.contexts:
        raise OrchError(f"context {ctx.args.name} exists; remove it first (orch context rm)")
    managers = parse_addresses(ctx.args.manager, source="--manager")
    # Absolute, so that the context means the same from any working directory.
    tls_dir = os.path.abspath(os.path.expanduser(ctx.args.tls_dir)) if ctx.args.tls_dir else ""
    context = contexts.ClusterContext(ctx.args.name, tuple(managers), tls_dir)
    contexts.put(ctx.env, context, make_current=ctx.args.use or not config.current)
    ctx.out.write(f"context {ctx.args.name} added ({config.path})\n")
    return 0


def run_rm(ctx: Context) -> int:
    config = contexts.load(ctx.env)
    _existing(config, ctx.args.name)
    del config.contexts[ctx.args.name]
    if config.current == ctx.args.name:
        config.current = ""
    contexts.save(config)
    ctx.out.write(f"context {ctx.args.name} removed\n")
    return 0


def run_current(ctx: Context) -> int:
    found = resolve_managers(getattr(ctx.args, "manager", None), env=ctx.env)
    config = contexts.load(ctx.env)
    chosen = config.contexts.get(found.context)
    record = {
        "context": found.context,
        "source": found.source,
        "managers": found.addresses,
        "tls_dir": chosen.tls_dir if chosen else "",
    }
    emit(ctx.out, ctx.args.output, record, _current_table)
    return 0


def _current_table(record: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    row = [
        record["context"] or "-",
        ",".join(record["managers"]),
        record["source"],
        record["tls_dir"] or "-",
    ]
    return ["CONTEXT", "MANAGERS", "FROM", "TLS DIR"], [row]


def _existing(config: contexts.Config, name: str) -> contexts.ClusterContext:
    if name not in config.contexts:
        known = ", ".join(sorted(config.contexts)) or "none"
        raise OrchError(f"no context {name} in {config.path} (contexts: {known})")
    return config.contexts[name]
