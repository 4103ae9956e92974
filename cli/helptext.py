"""Examples at the end of every command's ``--help`` (argparse epilogs), kept in one table
so that they read as a set and a test can see that no command lacks them.

:func:`iter_parsers` walks the parser tree; argparse has no public API for that, and its
``_actions`` list is what argparse's own help uses. Completion (completion.py) walks the
same tree.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

EXAMPLES: dict[str, list[str]] = {
    "": ["orch dev up", "orch apply -f web.yaml", "orch ps -f state=running", "orch logs web -f"],
    "apply": [
        "orch apply -f web.yaml",
        "orch apply -f web.yaml --dry-run",
        "orch apply -f dir/ -o json",
    ],
    "scale": ["orch scale web=5", "orch scale web=5 api=2"],
    "rm": ["orch rm web", "orch rm web api"],
    "rollout": ["orch rollout status web"],
    "rollout status": ["orch rollout status web"],
    "rollback": ["orch rollback web"],
    "ls": ["orch ls", "orch ls -o json"],
    "ps": [
        "orch ps web",
        "orch ps -a -f state=failed -f state=rejected     # either state",
        "orch ps -f service=web -f node=node1             # both",
        "orch ps --watch",
    ],
    "nodes": ["orch nodes", "orch nodes -o yaml"],
    "managers": ["orch managers"],
    "inspect": ["orch inspect service web", "orch inspect task web.1", "orch inspect node node1"],
    "node": ["orch node drain node1", "orch node label node1 zone=a", "orch node rm node3"],
    "node ls": ["orch node ls"],
    "node drain": ["orch node drain node1 node2"],
    "node pause": ["orch node pause node1"],
    "node activate": ["orch node activate node1"],
    "node label": ["orch node label node1 zone=a", "orch node label node1 zone-"],
    "node rm": ["orch node rm node3", "orch node rm --force node3"],
    "node inspect": ["orch node inspect node1"],
    "network": ["orch network ls", "orch network inspect front", "orch network rm front"],
    "network ls": ["orch network ls -o json"],
    "network inspect": ["orch network inspect front"],
    "network rm": ["orch network rm front back"],
    "logs": ["orch logs web", "orch logs web.2 -f", "orch logs web --tail 20"],
    "exec": ["orch exec web -- ls /", "orch exec -e DEBUG=1 web.2 -- sh -c 'env'"],
    "dev": ["orch dev up --nodes 3", "orch dev down"],
    "dev up": ["orch dev up", "orch dev up --nodes 5 --managers 3 --etcd-members 3"],
    "dev down": ["orch dev down"],
    "context": [
        "orch context add prod --manager 10.0.0.1:7701,10.0.0.2:7701",
        "orch context use prod",
        "orch context current",
    ],
    "context ls": ["orch context ls"],
    "context use": ["orch context use prod"],
    "context add": ["orch context add prod --manager 10.0.0.1:7701 --tls-dir /etc/orch/prod --use"],
    "context rm": ["orch context rm prod"],
    "context current": ["orch context current", "ORCH_MANAGER=h:7701 orch context current"],
    "version": ["orch version", "orch version -o json"],
    "join-token": ["orch join-token worker", "orch join-token manager --rotate"],
    "ca": ["orch ca issue-admin alice --out ~/.orch/alice"],
    "ca issue-admin": ["orch ca issue-admin alice --out ~/.orch/alice"],
    "completion": [
        "source <(orch completion bash)          # in ~/.bashrc",
        "orch completion zsh > ~/.orch-completion.zsh",
    ],
}


def iter_parsers(
    parser: argparse.ArgumentParser, path: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(path, parser) for ``parser`` and every command under it ("orch", "orch node", "orch
    node drain"...), leaving out hidden helpers (names starting with "__")."""
    path = path or parser.prog
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if not name.startswith("__"):
                    yield from iter_parsers(sub, f"{path} {name}")


def subcommand_names(parser: argparse.ArgumentParser) -> list[str]:
    return [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
        if not name.startswith("__")
    ]


def add_examples(root: argparse.ArgumentParser) -> None:
    """Put each command's examples in its epilog (kept as written, line by line)."""
    for path, parser in iter_parsers(root):
        command = path.removeprefix(root.prog).strip()
        if command in EXAMPLES:
            parser.epilog = "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES[command])
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
