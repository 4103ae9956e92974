"""Pure parts of logs/exec routing: which manager reaches a task's node, which task an
`orch exec` target means, and merging the streams of several managers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from orch.errors import NotFoundError, ValidationError
from orch.manager.streams.forwarding import merge
from orch.manager.streams.sessionroutes import TargetError, exec_task, plan_routes
from orch.proto import objects_pb2, types_pb2

RUNNING, COMPLETE, SHUTDOWN = types_pb2.RUNNING, types_pb2.COMPLETE, types_pb2.SHUTDOWN


def task(
    task_id: str,
    slot: int = 1,
    node: str = "n1",
    state: int = RUNNING,
    desired: int = RUNNING,
    service: str = "web",
    created: int = 100,
) -> objects_pb2.Task:
    return objects_pb2.Task(
        id=task_id,
        service_name=service,
        slot=slot,
        node_id=node,
        desired_state=desired,
        status=objects_pb2.TaskStatus(state=state),
        meta=objects_pb2.Meta(created_at=Timestamp(seconds=created)),
    )


def routes_of(tasks, **kw):
    args = dict(
        self_id="m1",
        local_nodes={"n1"},
        holders={"n1": "m1", "n2": "m2", "n3": "m3", "n4": "m1"},
        managers={"m1": "10.0.0.1:1", "m2": "10.0.0.2:2"},
        hostnames={"n1": "node1", "n2": "node2", "n3": "node3", "n4": "node4", "n5": "node5"},
    )
    return plan_routes(tasks, **{**args, **kw})


# -- plan_routes ---------------------------------------------------------------------------


def test_local_and_remote_tasks_are_split_by_session_holder() -> None:
    a, b, c = task("a", node="n1"), task("b", node="n2"), task("c", node="n2")
    routes = routes_of([a, b, c])
    assert routes.local == {"n1": [a]}
    assert routes.remote == {"10.0.0.2:2": [b, c]}
    assert routes.unreachable == {}


def test_a_node_without_liveness_is_connected_to_no_manager() -> None:
    routes = routes_of([task("a", node="n5")])
    assert routes.unreachable == {"n5": "node node5 is not connected to any manager"}
    assert not routes.local and not routes.remote


def test_a_holder_that_is_not_up_is_named() -> None:
    routes = routes_of([task("a", node="n3")])
    assert routes.unreachable == {"n3": "node node3's session is with manager m3, which is not up"}


def test_a_record_naming_this_manager_without_a_session_is_never_forwarded_to_itself() -> None:
    routes = routes_of([task("a", node="n4")])
    assert routes.remote == {}
    assert "just lost its session" in routes.unreachable["n4"]


def test_a_node_connected_here_is_local_whatever_its_record_says() -> None:
    # The record may trail a reconnect by a moment: the session we hold is the truth.
    routes = routes_of([task("a", node="n2")], local_nodes={"n2"})
    assert list(routes.local) == ["n2"] and not routes.remote


# -- exec_task -----------------------------------------------------------------------------


def pick(target: str, tasks, services=("web", "once")):
    return exec_task(target, services=set(services), tasks=tasks)


def test_a_service_means_its_running_task_of_the_lowest_slot() -> None:
    tasks = [task("t3", slot=3), task("t1", slot=1, state=COMPLETE), task("t2", slot=2)]
    assert pick("web", tasks).id == "t2"


def test_a_service_prefers_tasks_still_desired_to_run() -> None:
    tasks = [task("old", slot=1, desired=SHUTDOWN), task("t2", slot=2)]
    assert pick("web", tasks).id == "t2"


def test_a_service_without_a_running_task_is_a_target_error() -> None:
    with pytest.raises(TargetError, match=r"^service once has no running task$"):
        pick("once", [task("x", service="once", state=COMPLETE)])


def test_a_slot_means_its_running_task_and_names_the_newest_when_none_runs() -> None:
    tasks = [
        task("old2", slot=2, state=COMPLETE, created=100),
        task("new2", slot=2, state=RUNNING, created=200),
    ]
    assert pick("web.2", tasks).id == "new2"
    ended = [
        task("aaa", slot=2, state=SHUTDOWN, created=100),
        task("bbb", slot=2, state=COMPLETE, created=200),
    ]
    with pytest.raises(TargetError) as err:
        pick("web.2", ended)
    assert str(err.value) == "task bbb (web.2) is not running (state: complete)"
    with pytest.raises(NotFoundError, match="no task in slot 9"):
        pick("web.9", tasks)


def test_a_task_id_or_prefix_must_be_unique_and_running() -> None:
    tasks = [task("abc123", slot=1), task("abd456", slot=2, state=COMPLETE)]
    assert pick("abc", tasks).id == "abc123"
    with pytest.raises(ValidationError, match="ambiguous"):
        pick("ab", tasks)
    with pytest.raises(
        TargetError, match=r"task abd456 \(web.2\) is not running \(state: complete\)"
    ):
        pick("abd456", tasks)
    with pytest.raises(NotFoundError, match="no such service or task: zzz"):
        pick("zzz", tasks)


def test_a_dotted_name_that_is_not_a_service_slot_is_a_task_id() -> None:
    with pytest.raises(NotFoundError):
        pick("api.1", [task("t1")])


# -- merge ---------------------------------------------------------------------------------


async def items(
    *values, gate: asyncio.Event | None = None, fail: Exception | None = None
) -> AsyncIterator:
    for v in values:
        yield v
        if gate:
            await gate.wait()
    if fail:
        raise fail


async def test_merge_yields_every_item_of_every_part() -> None:
    got = [x async for x in merge([items(1, 2), items(3), items()])]
    assert sorted(got) == [1, 2, 3]


async def test_merge_ends_with_the_first_error() -> None:
    forever = asyncio.Event()
    with pytest.raises(NotFoundError, match="gone"):
        async for _ in merge([items(1, gate=forever), items(2, fail=NotFoundError("gone"))]):
            pass


async def test_leaving_a_merge_closes_every_part() -> None:
    closed: list[str] = []

    async def part(name: str) -> AsyncIterator[str]:
        try:
            yield name
            await asyncio.Event().wait()
        finally:
            closed.append(name)

    stream = merge([part("a"), part("b")])
    await anext(stream)
    await stream.aclose()
    assert sorted(closed) == ["a", "b"]
