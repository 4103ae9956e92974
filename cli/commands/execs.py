"""``orch exec [-e KEY=VALUE] SERVICE|SERVICE.SLOT|TASK -- COMMAND [ARG...]``.

Runs a command in a running container, as `docker exec` without -it: the command's stdout
and stderr are written to ours as the bytes arrive, and we exit with its exit code (126 or
127 when it could not be executed or found, 128+N when a signal ended it). orch's own
failures (no such task, the task is not running, no manager) are one line on stderr and
exit 1, like every command. No TTY and no stdin yet.

There is no deadline: the command may run as long as it likes; Ctrl-C (or a closed pipe)
cancels the call, and the manager kills the command. The call may go to another manager
only until the command has started (the server's first message), so a command is never
run twice.
"""

from __future__ import annotations

import argparse
from typing import Any, BinaryIO

from orch.cli.context import Context
from orch.errors import OrchError, ValidationError
from orch.proto import control_pb2

USAGE = "orch exec [-e KEY=VALUE] SERVICE|SERVICE.SLOT|TASK -- COMMAND [ARG...]"

DESCRIPTION = """\
Run COMMAND in a running container and print its output; orch exits with the
command's exit code. SERVICE runs it in the service's running task of the lowest
slot, SERVICE.SLOT in that slot's running task, TASK in that task (id or unique id
prefix). No terminal and no stdin: use `sh -c '...'` for shell syntax. orch's
own options go before TARGET; everything after it belongs to COMMAND.

examples:
  orch exec web -- cat /etc/hosts
  orch exec web.2 -- sh -c 'echo $HOSTNAME; ls /data'
  orch exec -e DEBUG=1 3f9c2a -- /app/healthcheck
"""


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "exec",
        parents=[common],
        help="run a command in a running container",
        usage=USAGE,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        type=env_arg,
        metavar="KEY=VALUE",
        help="set an environment variable for the command (repeatable)",
    )
    p.add_argument("target", metavar="SERVICE|SERVICE.SLOT|TASK")
    p.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]", help="what to run"
    )
    p.set_defaults(func=run_exec)


def env_arg(text: str) -> str:
    """KEY=VALUE with a non-empty KEY without "="."""
    key, sep, _ = text.partition("=")
    if not sep or not key or any(c.isspace() for c in key):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return text


def command_argv(words: list[str]) -> list[str]:
    """The command from what follows the target (argparse keeps a leading "--")."""
    argv = words[1:] if words[:1] == ["--"] else list(words)
    if not argv or not argv[0]:
        raise ValidationError(f"exec: no command given (usage: {USAGE})")
    return argv


def run_exec(ctx: Context) -> int:
    args = ctx.args
    request = control_pb2.ExecRequest(
        target=args.target, argv=command_argv(args.command), env=args.env
    )
    stdout: BinaryIO = ctx.out.buffer  # type: ignore[attr-defined]
    stderr: BinaryIO = ctx.err.buffer  # type: ignore[attr-defined]
    ctx.out.flush()
    ctx.err.flush()
    outputs = ctx.client().stream("Exec", request, timeout=None)
    exit_code: int | None = None
    try:
        for out in outputs:
            if out.data:
                sink = stderr if out.stream == "stderr" else stdout
                sink.write(out.data)
                sink.flush()  # as it arrives: an interactive-looking command stays live
            if out.exited:
                exit_code = out.exit_code
    finally:
        outputs.close()
    if exit_code is None:
        raise OrchError("the manager ended the exec without the command's exit code")
    return exit_code
