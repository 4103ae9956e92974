"""Placement constraints and spread keys: their grammar, parsed once into a small model.

A constraint is ``ATTRIBUTE==VALUE`` or ``ATTRIBUTE!=VALUE`` over a node attribute
(Swarm's syntax): ``node.id``, ``node.hostname``, ``node.labels.KEY`` (the user's labels,
``orch node label``), ``engine.labels.KEY`` (the agent's), ``node.platform.os`` and
``node.platform.arch``. Values compare case-insensitively, label keys exactly, and a label
a node does not have reads as "" (so ``node.labels.zone!=a`` holds on a node without a
zone), all as in swarmkit's constraint.go. A spread preference names an attribute the
same way.

Why a module of its own, beside model.py: the same parser serves three layers that must
agree on the grammar, and none of them may import another: the manifest validator (a
file:line error for a bad constraint), the Control API (which runs that validator on
every Apply) and the manager's scheduler and global orchestrator (which match nodes).
Pure: strings and protobuf in, values out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from orch.proto import objects_pb2, specs_pb2

Node = objects_pb2.Node

ATTRIBUTES = (
    "node.id",
    "node.hostname",
    "node.labels.KEY",
    "engine.labels.KEY",
    "node.platform.os",
    "node.platform.arch",
)
ATTRIBUTES_ACCEPTED = ", ".join(ATTRIBUTES)
CONSTRAINT_ACCEPTED = (
    f"ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, where ATTRIBUTE is one of {ATTRIBUTES_ACCEPTED}"
)
SPREAD_ACCEPTED = f"a node attribute, e.g. node.labels.zone (one of {ATTRIBUTES_ACCEPTED})"

_LABEL_PREFIXES = {"node.labels.": "node.labels", "engine.labels.": "engine.labels"}
_PLAIN = ("node.id", "node.hostname", "node.platform.os", "node.platform.arch")
_LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?")
_SHAPE = re.compile(r"\s*(?P<attr>.*?)\s*(?P<op>==|!=)\s*(?P<value>.*?)\s*")


class PlacementError(ValueError):
    """A constraint or spread key that does not parse. ``accepted`` says what would."""

    def __init__(self, message: str, accepted: str) -> None:
        super().__init__(message)
        self.message = message
        self.accepted = accepted


@dataclass(frozen=True)
class Attribute:
    """A node attribute: ``name`` is "node.hostname" or, for labels, "node.labels" /
    "engine.labels" with the label's ``key``."""

    name: str
    key: str = ""

    def __str__(self) -> str:
        return f"{self.name}.{self.key}" if self.key else self.name

    def of(self, node: Node) -> str:
        """The attribute's value on ``node``; "" when the node has no such label."""
        desc = node.description
        if self.name == "node.labels":
            return node.spec.labels.get(self.key, "")
        if self.name == "engine.labels":
            return desc.labels.get(self.key, "")
        if self.name == "node.id":
            return node.id
        if self.name == "node.hostname":
            return desc.hostname
        os_name, _, arch = desc.platform.partition("/")
        return os_name if self.name == "node.platform.os" else arch


@dataclass(frozen=True)
class Constraint:
    """One parsed constraint; ``str()`` gives its canonical text."""

    attribute: Attribute
    equal: bool
    value: str

    def __str__(self) -> str:
        return f"{self.attribute}{'==' if self.equal else '!='}{self.value}"

    def matches(self, node: Node) -> bool:
        same = self.attribute.of(node).casefold() == self.value.casefold()
        return same == self.equal


def parse_attribute(text: str, accepted: str = ATTRIBUTES_ACCEPTED) -> Attribute:
    """``node.labels.zone`` -> Attribute("node.labels", "zone"). Prefixes are read
    case-insensitively (as Swarm does), label keys as written."""
    stripped = text.strip()
    lowered = stripped.lower()
    for prefix, name in _LABEL_PREFIXES.items():
        if lowered.startswith(prefix):
            key = stripped[len(prefix) :]
            if not key:
                raise PlacementError(f"no label key after {prefix!r}", accepted)
            if len(key) > 253 or not _LABEL_KEY.fullmatch(key):
                raise PlacementError(f"invalid label key {key!r} in {stripped!r}", accepted)
            return Attribute(name, key)
    if lowered in _PLAIN:
        return Attribute(lowered)
    if not stripped:
        raise PlacementError("no attribute given", accepted)
    raise PlacementError(f"unknown attribute {stripped!r}{_hint(stripped)}", accepted)


def _hint(text: str) -> str:
    """A guess at the attribute meant: a bare label key, or a misspelt prefix."""
    lowered = text.lower()
    for wrong, right in (("node.label.", "node.labels."), ("engine.label.", "engine.labels.")):
        if lowered.startswith(wrong):
            return f"; did you mean {right + text[len(wrong) :]!r}?"
    if "." not in text and _LABEL_KEY.fullmatch(text):
        return f"; did you mean 'node.labels.{text}'?"
    close = difflib.get_close_matches(lowered, _PLAIN, n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_constraint(text: str) -> Constraint:
    """``"node.labels.zone == a"`` -> Constraint; PlacementError saying what is wrong."""
    match = _SHAPE.fullmatch(text)
    if match is None:
        raise PlacementError(_shape_problem(text), CONSTRAINT_ACCEPTED)
    value = match["value"]
    if not value:
        raise PlacementError(f"no value after {match['op']!r} in {text!r}", CONSTRAINT_ACCEPTED)
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or "==" in value or "!=" in value:
        raise PlacementError(f"invalid value {value!r} in {text!r}", CONSTRAINT_ACCEPTED)
    attribute = parse_attribute(match["attr"], CONSTRAINT_ACCEPTED)
    return Constraint(attribute, match["op"] == "==", value)


def _shape_problem(text: str) -> str:
    single = re.fullmatch(r"\s*([^=!<>~]+?)\s*=\s*([^=!<>~]+?)\s*", text)
    if single:
        return f"expected '==' or '!=' in {text!r}; did you mean '{single[1]}=={single[2]}'?"
    for op in ("<=", ">=", "~=", "=~", "<", ">"):
        if op in text:
            return f"unsupported operator {op!r} in {text!r}"
    return f"no '==' or '!=' in {text!r}"


def parse_constraints(texts: Iterable[str]) -> list[Constraint]:
    """All of them parsed; the first bad one raises."""
    return [parse_constraint(t) for t in texts]


def parse_spread(text: str) -> Attribute:
    """The attribute of a spread preference."""
    return parse_attribute(text, SPREAD_ACCEPTED)


def spread_attributes(placement: specs_pb2.Placement) -> list[Attribute]:
    """The spread preferences in order; ones that do not parse are left out (specs are
    validated before they are stored, so only a hand-written etcd value has them)."""
    out = []
    for pref in placement.preferences:
        try:
            out.append(parse_spread(pref.spread))
        except PlacementError:
            continue
    return out


def first_unmet(constraints: Iterable[Constraint], node: Node) -> Constraint | None:
    """The first constraint ``node`` does not satisfy, or None when it satisfies all."""
    return next((c for c in constraints if not c.matches(node)), None)
