"""Hostile or mistaken writes through the real Control API (gRPC) on a MemoryStore: each is
refused with one line naming the field and the limit, and the store is unchanged."""

from __future__ import annotations

import grpc
import pytest

from orch.proto import control_pb2, specs_pb2

from .conftest import Api


def service(name: str = "web", ports: tuple[int, ...] = ()) -> specs_pb2.ServiceSpec:
    spec = specs_pb2.ServiceSpec(name=name, replicas=1)
    spec.container.image = "busybox"
    for port in ports:
        spec.ports.add(published=port, target=80)
    return spec


async def refused(api: Api, call: object) -> str:
    """The one-line INVALID_ARGUMENT message of ``call``, checking nothing was written."""
    before = await api.store.revision()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await api.store.revision() == before
    return caught.value.details()


async def test_scale_beyond_the_bound_is_refused(api: Api) -> None:
    await api.stub.Apply(control_pb2.ApplyRequest(services=[service()]))
    request = control_pb2.ScaleRequest(replicas={"web": 2**64 - 1})
    assert await refused(api, api.stub.Scale(request)) == (
        f"replicas.web: expected at most 10000 replicas, got {2**64 - 1}"
    )
    ok = await api.stub.Scale(control_pb2.ScaleRequest(replicas={"web": 10_000}))
    assert [c.name for c in ok.changes] == ["web"]


async def test_scale_with_a_bad_name_is_refused_before_any_read(api: Api) -> None:
    request = control_pb2.ScaleRequest(replicas={"x" * 100_000: 1})
    assert await refused(api, api.stub.Scale(request)) == (
        "service name: 100000 characters, at most 63 allowed"
    )


async def test_an_oversized_apply_is_refused(api: Api) -> None:
    spec = service()
    spec.container.env.append("K=" + "v" * 200_000)
    message = await refused(api, api.stub.Apply(control_pb2.ApplyRequest(services=[spec])))
    assert message == "services[0] (web): spec.env: 200002 bytes, at most 131072 allowed"
