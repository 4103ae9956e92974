"""Read YAML documents into dicts and lists that remember where each value came from.

PyYAML's ``safe_load`` throws the positions away, but every manifest error must name a
file and line. So we let PyYAML compose the node graph (which carries marks), then build
our own containers from it: ``PosDict`` and ``PosList`` hold plain Python values plus the
line and column of every key and item, and the source text of every scalar (so
``PORT: 0800`` or ``user: 1000:1000`` reach the program as the user wrote them, not as
YAML 1.1 would re-read them as numbers).

Scalars are constructed by PyYAML's SafeConstructor, so tags, anchors and aliases
behave as usual; merge keys (``<<``) are resolved here, so merged keys keep the line
they were written on and only a key written twice in one mapping is a duplicate. Keys are always strings (``on:`` stays "on", not True).
Problems that are about the YAML itself (a syntax error, a duplicate key, an alias that
refers to itself) are returned as ``Problem`` records; the caller decides what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orch.manifests.problems import Problem, join_index, join_key

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it: about ten times faster, same marks."""
MAX_NODES = 100_000
"""Aliases can make a small file expand into a huge tree ("billion laughs"); stop here."""

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class Mark:
    """A position in a YAML source, both numbers 1-based."""

    line: int
    column: int


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class PosDict(dict[str, Any]):
    """A YAML mapping: a dict of the values, plus where each key and value is."""

    def __init__(self, mark: Mark) -> None:
        super().__init__()
        self.mark = mark
        self.key_marks: dict[str, Mark] = {}
        self.value_marks: dict[str, Mark] = {}
        self.raws: dict[str, str | None] = {}
        """Source text of each scalar value (None for mappings and lists)."""


def _put(out: PosDict, key: str, value: Any, key_node: Node, value_node: Node) -> None:
    out[key] = value
    out.key_marks[key] = _mark(key_node)
    out.value_marks[key] = _mark(value_node)
    out.raws[key] = value_node.value if isinstance(value_node, ScalarNode) else None


class PosList(list[Any]):
    """A YAML sequence: a list of the values, plus where each item is."""

    def __init__(self, mark: Mark) -> None:
        super().__init__()
        self.mark = mark
        self.item_marks: list[Mark] = []
        self.raws: list[str | None] = []


@dataclass(frozen=True)
class Document:
    """One document of a YAML stream: its root value and where it starts."""

    root: Any
    mark: Mark


class _TooLarge(Exception):
    pass


class _Builder:
    """Turns one composed node graph into Pos containers, collecting YAML problems."""

    def __init__(self) -> None:
        self.constructor = SafeConstructor()
        self.problems: list[tuple[Mark, Problem]] = []
        self.count = 0
        self.active: set[int] = set()  # ids of collection nodes on the current path

    def build(self, node: Node, path: str) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self.active:
            self._problem(node, path, "an alias refers to a node that contains it")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            return self._sequence(node, path)
        finally:
            self.active.discard(id(node))

    def _problem(self, node: Node, path: str, message: str) -> None:
        self.problems.append((_mark(node), Problem(path, message)))

    def _scalar(self, node: ScalarNode, path: str) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            self._problem(node, path, f"YAML error: {exc.problem}")
            return None

    def _mapping(self, node: MappingNode, path: str) -> PosDict:
        own = PosDict(_mark(node))
        if node.tag != _MAP_TAG:
            self._problem(node, path, f"unsupported YAML tag {node.tag!r} on a mapping")
            return own
        merged: list[PosDict] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # "<<: *base": merged below, own keys win
                merged += self._merge_sources(value_node, path)
                continue
            if not isinstance(key_node, ScalarNode):
                self._problem(key_node, path, "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            key_path = join_key(path, key)
            if key in own:
                first = own.key_marks[key].line
                self._problem(key_node, key_path, f"duplicate key (first at line {first})")
                continue
            _put(own, key, self.build(value_node, key_path), key_node, value_node)
        if not merged:
            return own
        out = PosDict(own.mark)
        for source in [*merged, own]:  # the first merged mapping wins among merged ones
            for key in source:
                if key not in out or source is own:
                    out.pop(key, None)
                    out[key] = source[key]
                    out.key_marks[key] = source.key_marks[key]
                    out.value_marks[key] = source.value_marks[key]
                    out.raws[key] = source.raws[key]
        return out

    def _merge_sources(self, node: Node, path: str) -> list[PosDict]:
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        sources = [self.build(n, path) for n in nodes if isinstance(n, MappingNode)]
        if len(sources) != len(nodes):
            self._problem(node, path, "'<<' merges a mapping or a list of mappings only")
        return sources

    def _sequence(self, node: SequenceNode, path: str) -> PosList:
        out = PosList(_mark(node))
        if node.tag != _SEQ_TAG:
            self._problem(node, path, f"unsupported YAML tag {node.tag!r} on a list")
            return out
        for index, item in enumerate(node.value):
            out.append(self.build(item, join_index(path, index)))
            out.item_marks.append(_mark(item))
            out.raws.append(item.value if isinstance(item, ScalarNode) else None)
        return out


def _is_empty(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _syntax_problem(exc: yaml.YAMLError, filename: str) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
        message = f"YAML syntax error: {exc.problem}"
        context_mark = exc.context_mark
        if exc.context and context_mark is not None:
            message += f" ({exc.context} at line {context_mark.line + 1})"
        return Problem("", message).at(filename, mark.line + 1, mark.column + 1)
    return Problem("", f"YAML error: {exc}").at(filename, 1)


def parse_documents(text: str, filename: str) -> tuple[list[Document], list[Problem]]:
    """All documents of ``text`` and the YAML-level problems found in them.

    Empty documents (a lone ``---``, a file of comments) are skipped. A syntax error
    stops the reading: documents before it are returned, the error is the last problem.
    Problems carry ``filename`` and a line; only syntax errors carry a column.
    """
    documents: list[Document] = []
    problems: list[Problem] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None or _is_empty(node):
                continue
            builder = _Builder()
            try:
                root = builder.build(node, "")
            except _TooLarge:
                msg = f"document expands to more than {MAX_NODES} values (aliases?)"
                problems.append(Problem("", msg).at(filename, _mark(node).line))
                continue
            documents.append(Document(root, _mark(node)))
            problems += [p.at(filename, mark.line) for mark, p in builder.problems]
    except yaml.YAMLError as exc:
        problems.append(_syntax_problem(exc, filename))
    finally:
        loader.dispose()
    return documents, problems
