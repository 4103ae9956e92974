"""An agent leaves a manager that stopped answering: keepalive ends a stream whose server
is frozen (SIGSTOP: the connection stays open, nothing answers, as when a host dies
without a FIN), and a manager that accepts a session but never starts it is left after
``start_timeout``. Real mTLS servers; the frozen one in a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from tests_support import test_pki

from orch.agent.session import Session, SessionSettings
from orch.identity import channels
from orch.identity.ca import Role
from orch.proto import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2

TESTS_DIR = str(Path(__file__).resolve().parent.parent)
LIVENESS_TTL = 2.0  # the default node liveness TTL (DispatcherSettings.liveness_ttl)

ECHO_SERVER = """
import asyncio, sys
sys.path.insert(0, sys.argv[2])
import grpc
from tests_support import TestPKI
from orch.identity import channels

async def main():
    pki = TestPKI()
    pki.write_admin(__import__("pathlib").Path(sys.argv[1]))
    async def echo(requests, context):
        async for message in requests:
            yield message
    server = grpc.aio.server(options=channels.server_options())
    handler = grpc.stream_stream_rpc_method_handler(echo)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Echo", {"S": handler})])
    port = pki.serve(server)
    await server.start()
    print(port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_keepalive_ends_a_stream_to_a_frozen_server_within_the_ttl(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ECHO_SERVER, str(tmp_path / "creds"), TESTS_DIR,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(await proc.stdout.readline())
        tls = channels.load_admin_tls(tmp_path / "creds")
        async with channels.aio_channel(f"127.0.0.1:{port}", tls) as channel:
            call = channel.stream_stream("/t.Echo/S")()
            await call.write(b"hello")
            assert await call.read() == b"hello"
            os.kill(proc.pid, signal.SIGSTOP)
            frozen = time.monotonic()

            async def heartbeats() -> None:  # the agent keeps writing, as its session does
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    while True:
                        await call.write(b"heartbeat")
                        await asyncio.sleep(0.5)

            writer = asyncio.create_task(heartbeats())
            with pytest.raises(grpc.aio.AioRpcError):
                async with asyncio.timeout(30):  # without keepalive: TCP's ~15 minutes
                    while True:
                        await call.read()
            took = time.monotonic() - frozen
            writer.cancel()
        print(f"the stream failed {took:.2f} s after the server froze")
        assert took < LIVENESS_TTL + 1.0, f"keepalive took {took:.2f} s"
    finally:
        proc.kill()
        await proc.wait()


class Dispatcher(dispatcher_pb2_grpc.DispatcherServicer):
    """Starts sessions, or (``silent``) takes them and says nothing."""

    def __init__(self, *, silent: bool) -> None:
        self.silent = silent
        self.sessions = 0

    async def Session(self, request_iterator, context):
        self.sessions += 1
        await anext(aiter(request_iterator))  # the Register
        if self.silent:
            await asyncio.Event().wait()
        yield dispatcher_pb2.ManagerMessage(
            started=dispatcher_pb2.SessionStarted(manager_id="answering")
        )
        yield dispatcher_pb2.ManagerMessage(assignments=dispatcher_pb2.Assignments(full=True))
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def serve(dispatcher: Dispatcher) -> AsyncIterator[str]:
    server = grpc.aio.server(options=channels.server_options())
    dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server)
    port = test_pki().serve(server)
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_a_manager_that_never_starts_the_session_is_left_for_the_next() -> None:
    silent, answering = Dispatcher(silent=True), Dispatcher(silent=False)
    async with serve(silent) as first, serve(answering) as second:

        async def ignore(_msg: dispatcher_pb2.Assignments) -> None:
            return None

        session = Session(
            node_id="n1",
            description=objects_pb2.NodeDescription(hostname="n1"),
            settings=SessionSettings(managers=[first, second], start_timeout=0.5),
            tls=lambda: test_pki().client(Role.WORKER),
            on_assignments=ignore,
            on_log_subscription=lambda *_: None,
        )
        running = asyncio.create_task(session.run())
        try:
            async with asyncio.timeout(10):
                await session.connected.wait()
            assert session.manager == second
            assert silent.sessions == 1 and answering.sessions == 1
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
