"""The one table of orch errors <-> gRPC status codes: an error raised by a server comes
back to a client (sync, like the CLI, or asyncio, like a forwarding manager) as the same
kind with the same message; statuses that are not orch's are left to the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from tests_support import control_server, test_pki

from orch import errors, grpcerrors
from orch.identity import channels
from orch.proto import control_pb2, control_pb2_grpc


class Failing(control_pb2_grpc.ControlServicer):
    """GetService fails with the error it is given (None: a plain UNAVAILABLE)."""

    def __init__(self) -> None:
        self.error: errors.OrchError | None = None

    async def GetService(self, request: Any, context: Any) -> Any:
        if self.error is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        await grpcerrors.abort(context, self.error)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Failing, str]]:
    servicer = Failing()
    async with control_server(servicer) as address:
        yield servicer, address


async def aio_failure(address: str) -> grpc.aio.AioRpcError:
    async with channels.aio_channel(address, test_pki().client()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await control_pb2_grpc.ControlStub(channel).GetService(control_pb2.GetServiceRequest())
    return caught.value


def sync_failure(address: str) -> grpc.RpcError:
    with channels.channel(address, test_pki().client()) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            control_pb2_grpc.ControlStub(channel).GetService(control_pb2.GetServiceRequest())
    return caught.value


KINDS = [
    (errors.ValidationError(["a: bad", "b: worse"]), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError("no such service: web"), grpc.StatusCode.NOT_FOUND),
    (errors.PreconditionError("network front is used by web"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ConflictError("lost a race"), grpc.StatusCode.ABORTED),
    (errors.StoreError("etcd txn: no answer within 5s"), grpc.StatusCode.UNAVAILABLE),
]


@pytest.mark.parametrize(("error", "code"), KINDS, ids=lambda v: type(v).__name__)
async def test_each_kind_crosses_as_its_code_and_comes_back_the_same(
    server: tuple[Failing, str], error: errors.OrchError, code: grpc.StatusCode
) -> None:
    servicer, address = server
    servicer.error = error
    for failure in (await aio_failure(address), await asyncio.to_thread(sync_failure, address)):
        assert grpcerrors.code_of(failure) == code
        back = grpcerrors.error_of(failure)
        assert type(back) is type(error)
        assert str(back) == grpcerrors.status_of(error).details


def test_subclasses_take_their_bases_code_and_others_are_internal() -> None:
    class InUse(errors.PreconditionError):
        pass

    assert grpcerrors.status_of(InUse("x")).code == grpc.StatusCode.FAILED_PRECONDITION
    assert grpcerrors.status_of(errors.OrchError("x")).code == grpc.StatusCode.INTERNAL


def test_a_validation_error_keeps_one_problem_per_line() -> None:
    status = grpcerrors.status_of(errors.ValidationError(["a: bad", "b: worse"]))
    assert status.details == "a: bad\nb: worse"


def test_only_the_store_is_marked() -> None:
    store = grpcerrors.status_of(errors.StoreError("no quorum"))
    assert store.trailing_metadata == (grpcerrors.STORE_UNAVAILABLE,)
    assert "etcd" in store.details and "no quorum" in store.details
    assert grpcerrors.status_of(errors.NotFoundError("x")).trailing_metadata == ()


async def test_an_unmarked_unavailable_is_not_orchs(server: tuple[Failing, str]) -> None:
    _, address = server  # no error set: the manager itself is unavailable
    failure = await aio_failure(address)
    assert grpcerrors.code_of(failure) == grpc.StatusCode.UNAVAILABLE
    assert grpcerrors.error_of(failure) is None
