"""``orch``: the command line. Argument wiring and the one place errors become output.

Every failure ends here as lines on stderr starting with ``orch: `` and exit status 1:
orch's own errors (an unreachable manager, a NOT_FOUND or INVALID_ARGUMENT from the
manager, a manifest's ValidationError with one problem per line), and, as a last resort,
an unexpected exception named in one line. Bad usage is argparse's exit 2. Tracebacks
appear only with ORCH_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import TextIO

from orch.cli.commands import (
    changes,
    completion,
    contextcmds,
    dev,
    execs,
    inspect,
    listings,
    logs,
    networks,
    nodes,
    rollouts,
    security,
    version,
)
from orch.cli.config import ENV_MANAGER, ENV_STATE_DIR, ENV_TLS_DIR, CliSettings
from orch.cli.context import Context
from orch.cli.helptext import add_examples
from orch.errors import OrchError, ValidationError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: `orch ps | head` closed our stdout


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds > 0")
    return value


def _connection_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # The same flags on the top parser and on each command, so both `orch --manager X ps`
    # and `orch ps --manager X` work. On commands the default is SUPPRESS, else a
    # command's default would overwrite a value given before the command name.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--manager",
        metavar="HOST:PORT[,HOST:PORT...]",
        default=default,
        help=f"manager address(es); default ${ENV_MANAGER}, then the current context "
        "(orch context), then the local cluster's file",
    )
    parser.add_argument(
        "--tls-dir",
        metavar="DIR",
        default=default,
        help=f"admin credentials (ca.pem, admin.pem, admin-key.pem); default ${ENV_TLS_DIR}, "
        f"then the current context's, then ${ENV_STATE_DIR}/tls",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        default=default,
        help=f"deadline of each call (default {CliSettings.timeout:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orch", description="Run and inspect services on an orch cluster."
    )
    _connection_flags(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection_flags(common, suppress=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = (
        changes, rollouts, listings, inspect, nodes, networks, logs, execs, dev, contextcmds,
        version, security, completion,
    )  # fmt: skip
    for module in modules:
        module.register(subparsers, common)
    add_examples(parser)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Runs one command and returns its exit status (the console script exits with it)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    env = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = CliSettings() if args.timeout is None else CliSettings(timeout=args.timeout)
    ctx = Context(args=args, out=out, err=err, env=env, settings=settings, parser=parser)
    debug = env.get("ORCH_DEBUG", "") not in ("", "0")
    try:
        return args.func(ctx)
    except OrchError as exc:
        if debug:
            traceback.print_exc(file=err)
        lines = exc.problems if isinstance(exc, ValidationError) else str(exc).splitlines()
        for line in lines or [type(exc).__name__]:
            err.write(f"orch: {line}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Python would complain again when flushing stdout at exit; point it at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if debug:
            raise
        err.write(
            f"orch: internal error: {type(exc).__name__}: {exc} (ORCH_DEBUG=1 shows a traceback)\n"
        )
        return EXIT_ERROR
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
