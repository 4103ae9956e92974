"""`orch exec` on the CLI's side of the wire: the real executable against a small Exec
server that plays the manager's part (output chunks, the exit code, errors)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from tests_support import test_pki

from orch.cli.commands.execs import command_argv, env_arg
from orch.cli.main import build_parser
from orch.errors import ValidationError
from orch.proto import control_pb2, control_pb2_grpc


class ExecServer(control_pb2_grpc.ControlServicer):
    def __init__(self) -> None:
        self.requests: list[control_pb2.ExecRequest] = []

    async def Exec(self, request: Any, context: Any) -> AsyncIterator[control_pb2.ExecOutput]:
        self.requests.append(request)
        if request.target == "stopped":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "task abc (web.2) is not running (state: complete)",
            )
        yield control_pb2.ExecOutput(task_id="abc", node_id="n1")
        yield control_pb2.ExecOutput(stream="stdout", data=b"out \xff bytes\n")
        yield control_pb2.ExecOutput(stream="stderr", data=b"err\n")
        if request.target == "vanishing":
            return  # no exit code: the stream ended early
        yield control_pb2.ExecOutput(exited=True, exit_code=int(request.argv[-1]))


@pytest.fixture
async def exec_server() -> AsyncIterator[tuple[ExecServer, str]]:
    server = grpc.aio.server()
    servicer = ExecServer()
    control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
    port = test_pki().serve(server)
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_output_goes_to_our_streams_and_the_exit_code_is_ours(orch, exec_server) -> None:
    servicer, address = exec_server
    result = await orch("--manager", address, "exec", "-e", "A=1", "web.2", "--", "sh", "7")
    assert result.returncode == 7
    assert result.stdout == b"out \xff bytes\n"
    assert result.stderr == "err\n"
    [request] = servicer.requests
    assert (request.target, list(request.argv), list(request.env)) == (
        "web.2",
        ["sh", "7"],
        ["A=1"],
    )


async def test_a_manager_refusal_is_one_line_and_exit_1(orch, exec_server) -> None:
    _, address = exec_server
    result = await orch("--manager", address, "exec", "stopped", "--", "true", "0")
    assert result.returncode == 1
    assert result.stderr == "orch: task abc (web.2) is not running (state: complete)\n"


async def test_a_stream_without_exit_code_is_an_error(orch, exec_server) -> None:
    _, address = exec_server
    result = await orch("--manager", address, "exec", "vanishing", "--", "true", "0")
    assert result.returncode == 1
    assert result.stderr.endswith(
        "orch: the manager ended the exec without the command's exit code\n"
    )


async def test_no_command_calls_nothing(orch, exec_server) -> None:
    servicer, address = exec_server
    result = await orch("--manager", address, "exec", "web", "--")
    assert result.returncode == 1
    assert result.stderr.startswith("orch: exec: no command given")
    assert servicer.requests == []


def test_everything_after_the_target_is_the_command() -> None:
    parser = build_parser()
    args = parser.parse_args(["exec", "-e", "K=v", "web", "--", "ls", "-l", "--manager", "x"])
    assert (args.target, command_argv(args.command), args.env) == (
        "web",
        ["ls", "-l", "--manager", "x"],
        ["K=v"],
    )
    args = parser.parse_args(["--manager", "h:1", "exec", "web", "ps", "-ef"])
    assert (args.manager, command_argv(args.command)) == ("h:1", ["ps", "-ef"])
    assert command_argv(["--", "--", "x"]) == ["--", "x"]  # only the first "--" is ours
    with pytest.raises(ValidationError):
        command_argv([])


def test_env_must_be_key_value() -> None:
    assert env_arg("A=") == "A="
    for bad in ("A", "=x", "A B=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            env_arg(bad)
