"""What every write of the Control API shares: the Decision a resource module computes
from the view, the view it reads, the spec diff, and the errors that are not plain
validation.

A resource module (services.py, networks.py, nodes.py) decides with pure functions of
a view and the request: ``decide_*(view, request, ...) -> Decision``. They read, they
never write and never await, so a decision is over one consistent snapshot; server.py
validates the request first, then commits the decision's ops in one guarded
transaction and decides again when it lost a race.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from orch import model
from orch.errors import PreconditionError
from orch.manager.state.api import Kind, Op, Update, Versioned
from orch.proto import control_pb2


class InUseError(PreconditionError):
    """The object is still used by others (a network by services)."""


class View(Protocol):
    """The reads a decision makes: ClusterView's, or a frozen copy of one."""

    @property
    def revision(self) -> int: ...

    def get(self, kind: Kind, name: str) -> Versioned | None: ...

    def items(self, kind: Kind) -> list[Versioned]: ...

    def objects(self, kind: Kind) -> Iterator[Any]: ...


@dataclass
class Decision:
    """The writes of one request over one view, what they change, and the object the
    request answers with when it names one (the node as UpdateNode leaves it)."""

    ops: list[Op] = dataclasses.field(default_factory=list)
    changes: list[control_pb2.Change] = dataclasses.field(default_factory=list)
    result: Any = None

    def __iadd__(self, other: Decision) -> Decision:
        self.ops += other.ops
        self.changes += other.changes
        return self


def spec_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Top-level-ish field paths where two spec messages differ: ["replicas",
    "container.image"]. Empty when equal."""
    if old == new:
        return []
    changed = []
    for field in new.DESCRIPTOR.fields:
        a, b = getattr(old, field.name), getattr(new, field.name)
        if a == b:
            continue
        path = prefix + field.name
        nested = field.type == field.TYPE_MESSAGE and not field.is_repeated
        if nested and path.count(".") < 1:
            changed += spec_changes(a, b, path + ".") or [path]
        else:
            changed.append(path)
    return changed


def change(kind: Kind, current: Versioned | None, spec: Any) -> control_pb2.Change:
    """How ``spec`` changes the stored object ``current``: create, unchanged, or update
    with the fields that differ."""
    label = kind.folder.rstrip("s")
    if current is None:
        return control_pb2.Change(kind=label, name=spec.name, action="create")
    fields = spec_changes(current.obj.spec, spec)
    action = "update" if fields else "unchanged"
    return control_pb2.Change(kind=label, name=spec.name, action=action, fields=fields)


def respecced(current: Versioned, spec: Any, now: datetime) -> Update:
    """The guarded update that gives the stored object ``spec`` as its next version."""
    updated = type(current.obj)()
    updated.CopyFrom(current.obj)
    updated.spec.CopyFrom(spec)
    updated.meta.version += 1
    updated.meta.updated_at.CopyFrom(model.timestamp(now))
    return Update(current.kind, updated, current.mod_revision)


def duplicates(kind: str, names: list[str]) -> list[str]:
    """One problem per name given more than once."""
    seen, dups = set(), []
    for name in names:
        if name in seen:
            dups.append(f"{kind} {name!r} is given more than once")
        seen.add(name)
    return dups
