"""Nodes through the real Control API (gRPC) on a MemoryStore: UpdateNode (availability,
labels, resolution by id, prefix or hostname, validation, a write that races the
dispatcher's status refresh) and RemoveNode (only a down node unless forced)."""

from __future__ import annotations

import grpc
import pytest

from orch.manager.state.api import Create, Kind, Update
from orch.manifests import limits
from orch.proto import control_pb2, objects_pb2, types_pb2

from .conftest import Api


async def add_node(api: Api, node_id: str, hostname: str, state: int = types_pb2.NODE_READY):
    node = objects_pb2.Node(
        id=node_id,
        meta=objects_pb2.Meta(version=1),
        description=objects_pb2.NodeDescription(hostname=hostname),
        spec=objects_pb2.NodeSpec(availability=types_pb2.ACTIVE, labels={"keep": "1"}),
        status=objects_pb2.NodeState(state=state),
    )
    await api.view.wait_for(await api.store.commit([Create(Kind.NODE, node)]))
    return node


async def stored(api: Api, node_id: str) -> objects_pb2.Node | None:
    current = await api.store.get(Kind.NODE, node_id)
    return None if current is None else current.obj


async def error_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_update_availability_by_hostname_bumps_version(api: Api) -> None:
    await add_node(api, "aaaa1111", "node1")
    got = await api.stub.UpdateNode(
        control_pb2.UpdateNodeRequest(id="node1", availability=types_pb2.DRAIN)
    )
    assert got.spec.availability == types_pb2.DRAIN
    node = await stored(api, "aaaa1111")
    assert node is not None
    assert node.spec.availability == types_pb2.DRAIN
    assert node.meta.version == 2
    assert node.meta.HasField("updated_at")
    assert dict(node.spec.labels) == {"keep": "1"}
    # The write is in the view before the call returns: a read sees it.
    assert (await api.stub.GetNode(control_pb2.GetNodeRequest(id="node1"))) == node


async def test_labels_are_added_then_removed_and_availability_kept(api: Api) -> None:
    await add_node(api, "aaaa1111", "node1")
    request = control_pb2.UpdateNodeRequest(
        id="aaaa", add_labels={"zone": "a", "gone": "x"}, remove_labels=["gone", "keep", "nope"]
    )
    got = await api.stub.UpdateNode(request)
    assert dict(got.spec.labels) == {"zone": "a"}
    assert got.spec.availability == types_pb2.ACTIVE
    node = await stored(api, "aaaa1111")
    assert node is not None and dict(node.spec.labels) == {"zone": "a"}


async def test_an_update_that_changes_nothing_writes_nothing(api: Api) -> None:
    await add_node(api, "aaaa1111", "node1")
    before = await api.store.get(Kind.NODE, "aaaa1111")
    got = await api.stub.UpdateNode(
        control_pb2.UpdateNodeRequest(id="node1", availability=types_pb2.ACTIVE)
    )
    after = await api.store.get(Kind.NODE, "aaaa1111")
    assert before is not None and after is not None
    assert after.mod_revision == before.mod_revision
    assert got.meta.version == 1


async def test_update_right_after_a_status_write_keeps_both(api: Api) -> None:
    """The dispatcher rewrites the node's status just before the update: whether the view
    has caught up or the guarded write loses and is decided again, both changes stay.
    (Which path runs depends on the watch's timing; the outcome must not.)"""
    await add_node(api, "aaaa1111", "node1")
    current = await api.store.get(Kind.NODE, "aaaa1111")
    assert current is not None
    # A status write the view has not seen yet when UpdateNode decides.
    refreshed = objects_pb2.Node()
    refreshed.CopyFrom(current.obj)
    refreshed.status.message = "refreshed"
    await api.store.commit([Update(Kind.NODE, refreshed, current.mod_revision)])
    await api.stub.UpdateNode(control_pb2.UpdateNodeRequest(id="node1", add_labels={"z": "1"}))
    node = await stored(api, "aaaa1111")
    assert node is not None
    assert node.status.message == "refreshed"
    assert dict(node.spec.labels) == {"keep": "1", "z": "1"}


async def test_update_errors(api: Api) -> None:
    await add_node(api, "aaaa1111", "node1")
    await add_node(api, "aaaa2222", "node2")
    missing = await error_of(api.stub.UpdateNode(control_pb2.UpdateNodeRequest(id="nodex")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert missing.details() == "no such node: nodex"
    ambiguous = await error_of(api.stub.UpdateNode(control_pb2.UpdateNodeRequest(id="aaaa")))
    assert ambiguous.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = await error_of(
        api.stub.UpdateNode(
            control_pb2.UpdateNodeRequest(
                id="node1", add_labels={"-x": "1", "ok": "a\nb"}, remove_labels=["y/"]
            )
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    lines = bad.details().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("""add_labels["-x"]: invalid label key '-x'""")
    assert lines[1] == "add_labels.ok: the value holds a control character"
    assert lines[2].startswith("""remove_labels["y/"]: invalid label key 'y/'""")
    node = await stored(api, "aaaa1111")
    assert node is not None and node.meta.version == 1  # nothing written


async def test_label_sizes_and_count_are_bounded_and_refused_unchanged(api: Api) -> None:
    await add_node(api, "aaaa1111", "node1")
    big = await error_of(
        api.stub.UpdateNode(control_pb2.UpdateNodeRequest(id="node1", add_labels={"k": "v" * 1025}))
    )
    assert big.details() == "add_labels.k: 1025 characters, at most 1024 allowed"
    many = {f"k{i}": "v" for i in range(limits.MAX_LABELS - 1)}  # and "keep"
    await api.stub.UpdateNode(control_pb2.UpdateNodeRequest(id="node1", add_labels=many))
    before = await api.store.get(Kind.NODE, "aaaa1111")
    assert before is not None
    over = await error_of(
        api.stub.UpdateNode(control_pb2.UpdateNodeRequest(id="node1", add_labels={"one": "more"}))
    )
    assert over.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert over.details() == "add_labels: 65 labels, at most 64 allowed on a node"
    after = await api.store.get(Kind.NODE, "aaaa1111")
    assert after is not None and after.mod_revision == before.mod_revision


async def test_remove_only_a_down_node_unless_forced(api: Api) -> None:
    await add_node(api, "aaaa1111", "node1")
    await add_node(api, "bbbb1111", "node2", state=types_pb2.NODE_DOWN)
    refused = await error_of(api.stub.RemoveNode(control_pb2.RemoveNodeRequest(id="node1")))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details().startswith("node node1 is ready; only a down node can be removed")
    assert await stored(api, "aaaa1111") is not None

    await api.stub.RemoveNode(control_pb2.RemoveNodeRequest(id="node2"))
    assert await stored(api, "bbbb1111") is None
    assert [n.id for n in (await api.stub.ListNodes(control_pb2.ListNodesRequest())).nodes] == [
        "aaaa1111"
    ]

    await api.stub.RemoveNode(control_pb2.RemoveNodeRequest(id="aaaa", force=True))
    assert await stored(api, "aaaa1111") is None
    missing = await error_of(api.stub.RemoveNode(control_pb2.RemoveNodeRequest(id="node1")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
