"""When a manager says etcd is unavailable (UNAVAILABLE plus the ``orch-error:
store-unavailable`` trailing metadata), the CLI prints the manager's one line and does not
fail over: every manager shares that etcd, so asking the next one would only double the
wait. A plain UNAVAILABLE (a manager that is down) still fails over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from tests_support import test_pki

from orch.errors import StoreError
from orch.grpcerrors import STORE_UNAVAILABLE, store_unavailable_message
from orch.proto import control_pb2, control_pb2_grpc

MESSAGE = store_unavailable_message(StoreError("etcd txn: no answer within 5s"))


class EtcdDown(control_pb2_grpc.ControlServicer):
    """A manager whose etcd has no quorum: writes fail the way the Control API fails them.
    ``marked``: whether the failure carries the store-unavailable metadata."""

    def __init__(self, *, marked: bool) -> None:
        self.marked = marked
        self.calls = 0

    async def Scale(self, request: Any, context: Any) -> Any:
        self.calls += 1
        metadata = (STORE_UNAVAILABLE,) if self.marked else ()
        await context.abort(grpc.StatusCode.UNAVAILABLE, MESSAGE, trailing_metadata=metadata)


async def serve(servicer: control_pb2_grpc.ControlServicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
    port = test_pki().serve(server)
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def etcd_down() -> AsyncIterator[tuple[EtcdDown, str]]:
    servicer = EtcdDown(marked=True)
    server, address = await serve(servicer)
    try:
        yield servicer, address
    finally:
        await server.stop(0)


async def test_store_unavailable_is_one_line_and_no_failover(orch, etcd_down, fake_server) -> None:
    down, address = etcd_down
    result = await orch("--manager", f"{address},{fake_server.address}", "scale", "web=3")
    assert result.returncode == 1
    assert result.stderr == f"orch: {MESSAGE}\n"
    assert result.stdout == b""
    assert down.calls == 1
    assert fake_server.control.requests == [], "the CLI asked another manager"


async def test_the_message_says_what_failed_and_what_to_do() -> None:
    assert MESSAGE == (
        "the cluster store (etcd) is unavailable (etcd txn: no answer within 5s): no quorum, "
        "or no member reachable; nothing was confirmed, retry once etcd is back"
    )


async def test_an_unmarked_unavailable_still_fails_over(orch, fake_server) -> None:
    servicer = EtcdDown(marked=False)
    server, address = await serve(servicer)
    try:
        result = await orch("--manager", f"{address},{fake_server.address}", "scale", "web=3")
    finally:
        await server.stop(0)
    assert result.returncode == 0, result.stderr
    assert servicer.calls == 1
    assert [m for m, _ in fake_server.control.requests] == ["Scale"]
    assert control_pb2.ScaleRequest(replicas={"web": 3}) == fake_server.control.requests[0][1]
