"""The field table itself: every field documented, every target a real protobuf field."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import Descriptor

from orch.manifests.schema import KINDS, SPEC_TYPES, iter_fields


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_is_documented_and_lands_in_the_protobuf(kind: str) -> None:
    for path, field in iter_fields(kind):
        assert field.doc.endswith("."), path
        if field.target is None:
            continue
        message = SPEC_TYPES[kind]()
        *parents, last = field.target.split(".")
        for part in parents:
            message = getattr(message, part)
        assert last in message.DESCRIPTOR.fields_by_name, (path, field.target)


def test_iter_fields_walks_nested_and_list_fields() -> None:
    paths = [path for path, _ in iter_fields("Service")]
    assert paths[:4] == ["apiVersion", "kind", "metadata", "metadata.name"]
    assert "spec.resources.limits.pids" in paths
    assert "spec.resources.reservations.pids" not in paths
    assert "spec.networks[].aliases" in paths
    assert [p for p, _ in iter_fields("Network")][-2:] == ["spec.driver", "spec.subnet"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_protobuf_field_has_a_manifest_field(kind: str) -> None:
    targets = {f.target for _, f in iter_fields(kind) if f.target}
    leaves = set(_leaves(SPEC_TYPES[kind].DESCRIPTOR, ""))
    # A field may fill a whole message (healthcheck, converted from its mapping).
    uncovered = {leaf for leaf in leaves if not any(_within(leaf, t) for t in targets)}
    # pids cannot be reserved (validate refuses it), so the manifest has no field for it
    assert uncovered == ({"resources.reservations.pids"} if kind == "Service" else set())


def _within(leaf: str, target: str) -> bool:
    return leaf == target or leaf.startswith(target + ".")


def _leaves(descriptor: Descriptor, prefix: str) -> Iterator[str]:
    for fd in descriptor.fields:
        path = prefix + fd.name
        message = fd.message_type
        if message is None or fd.is_repeated or message.full_name == "google.protobuf.Duration":
            yield path
        else:
            yield from _leaves(message, path + ".")
    assert [p for p, _ in iter_fields("Network")][-2:] == ["spec.driver", "spec.subnet"]
