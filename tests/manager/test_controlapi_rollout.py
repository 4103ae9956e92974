"""Rolling updates through the real Control API (gRPC) on a MemoryStore: which Applies start
an update and keep the previous spec, that an unchanged Apply writes nothing, Rollback, and
the rollout counts GetService reports."""

from __future__ import annotations

import grpc
import pytest

from orch.manager.state.api import Create, Kind
from orch.proto import control_pb2, objects_pb2, specs_pb2, types_pb2

from .conftest import Api

UpdateStatus = objects_pb2.UpdateStatus


def spec(image: str = "reg:5000/web:1", replicas: int = 3) -> specs_pb2.ServiceSpec:
    s = specs_pb2.ServiceSpec(name="web", replicas=replicas)
    s.container.image = image
    s.update.parallelism = 2
    s.update.order = specs_pb2.UpdateConfig.START_FIRST
    return s


async def apply(api: Api, s: specs_pb2.ServiceSpec) -> control_pb2.ApplyResponse:
    return await api.stub.Apply(control_pb2.ApplyRequest(services=[s]))


async def service(api: Api) -> objects_pb2.Service:
    current = await api.store.get(Kind.SERVICE, "web")
    assert current is not None
    return current.obj


async def test_unchanged_apply_writes_nothing(api: Api) -> None:
    await apply(api, spec())
    before = await api.store.revision()
    response = await apply(api, spec())
    assert [c.action for c in response.changes] == ["unchanged"]
    assert await api.store.revision() == before


async def test_replicas_alone_start_no_update_and_keep_no_previous_spec(api: Api) -> None:
    await apply(api, spec())
    response = await apply(api, spec(replicas=5))
    assert list(response.changes[0].fields) == ["replicas"]
    svc = await service(api)
    assert svc.meta.version == 2 and svc.spec.replicas == 5
    assert not svc.HasField("previous_spec") and not svc.HasField("update_status")


async def test_an_image_change_starts_an_update_and_rollback_returns(api: Api) -> None:
    await apply(api, spec())
    await apply(api, spec(image="reg:5000/web:2"))
    svc = await service(api)
    assert svc.update_status.state == UpdateStatus.UPDATING
    assert svc.previous_spec.container.image == "reg:5000/web:1"
    await api.stub.Scale(control_pb2.ScaleRequest(replicas={"web": 4}))
    info = await api.stub.Rollback(control_pb2.RollbackRequest(name="web"))
    back = info.service
    assert back.spec.container.image == "reg:5000/web:1" and back.spec.replicas == 4
    assert back.previous_spec.container.image == "reg:5000/web:2"
    assert back.update_status.state == UpdateStatus.ROLLING_BACK
    assert back.update_status.message == "rollback requested"
    assert back == await service(api)


async def test_rollback_without_previous_spec_is_a_failed_precondition(api: Api) -> None:
    await apply(api, spec())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Rollback(control_pb2.RollbackRequest(name="web"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no previous spec" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.Rollback(control_pb2.RollbackRequest(name="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_get_service_counts_the_rollout(api: Api) -> None:
    await apply(api, spec())
    await apply(api, spec(image="reg:5000/web:2"))
    svc = await service(api)
    tasks = []
    for slot, image in ((1, "reg:5000/web:2"), (2, "reg:5000/web:1"), (3, "reg:5000/web:1")):
        task = objects_pb2.Task(
            id=f"t{slot}", service_id=svc.id, service_name="web", slot=slot,
            desired_state=types_pb2.RUNNING,
        )  # fmt: skip
        task.container.image = image
        task.status.state = types_pb2.RUNNING
        task.meta.created_at.GetCurrentTime()
        tasks.append(Create(Kind.TASK, task))
    await api.view.wait_for(await api.store.commit(tasks))
    info = await api.stub.GetService(control_pb2.GetServiceRequest(name="web"))
    r = info.rollout
    assert (r.total, r.updated, r.running, r.healthy, r.failed) == (3, 1, 3, 3, 0)
    assert info.replicas_running == 3
