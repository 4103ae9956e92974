"""`orch rm`, `orch network rm`, `orch node rm`: one removal per name, in turn."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from google.protobuf.message import Message

from orch.cli.context import Context
from orch.errors import ConflictError, NotFoundError


def remove_each(
    ctx: Context, kind: str, names: Iterable[str], method: str, request: Callable[[str], Message]
) -> int:
    """Calls ``method`` with ``request(name)`` for each name; one that is missing (or in
    use, or not down) is reported and the rest still go, as `docker ... rm` does. Exit 1
    when any was not removed."""
    status = 0
    for name in names:
        try:
            ctx.client().call(method, request(name))
        except (NotFoundError, ConflictError) as exc:
            ctx.err.write(f"orch: {exc}\n")
            status = 1
            continue
        ctx.out.write(f"{kind}/{name} removed\n")
    return status


def rm_command(
    kind: str, names: str, method: str, request: Callable[[Context, str], Message]
) -> Callable[[Context], int]:
    """The ``run_rm`` of a command group: removes each of ``ctx.args.<names>``."""

    def run_rm(ctx: Context) -> int:
        names_given = getattr(ctx.args, names)
        return remove_each(ctx, kind, names_given, method, lambda name: request(ctx, name))

    return run_rm
