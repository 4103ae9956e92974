"""Load manifest files into protobuf specs, or report every problem in them at once.

An apply is all or nothing: if any document of any file is wrong, nothing is returned
and ``ValidationError`` lists every problem found, each as
``FILE:LINE: FIELD.PATH: message (accepted: ...)``. So the loader never stops at the
first problem: a bad value is left out and the walk goes on.

A document goes through three steps:
1. yamlpos reads it into dicts and lists that know their lines;
2. the schema decoder checks shapes and types (unknown fields, "expected an integer"),
   converts values (sizes, durations) and records the line of every field path;
3. the spec built from it goes through validate.py, the same rules the manager runs;
   their field paths are looked up in the recorded lines.
Then the checks that span documents: duplicate names, overlapping subnets, a host port
published by two services.
"""

from __future__ import annotations

import difflib
import ipaddress
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from orch.errors import NotFoundError, ValidationError
from orch.manifests import schema
from orch.manifests.problems import (
    Problem,
    describe_value,
    join_index,
    join_key,
    parent_path,
    related,
)
from orch.manifests.schema import Invalid, ListOf, MapOf, Obj, OneOf, Scalar, Type
from orch.manifests.validate import (
    check_network,
    check_service,
    port_clashes,
    port_key,
    port_text,
)
from orch.manifests.yamlpos import Mark, PosDict, PosList, parse_documents
from orch.proto import specs_pb2

MANIFEST_SUFFIXES = (".yaml", ".yml")
_INVALID: Any = object()
"""Returned by the decoder for a value it reported; the caller leaves the field out."""


@dataclass
class Manifest:
    """The specs of one apply, in file order, and where each was defined."""

    services: list[specs_pb2.ServiceSpec] = field(default_factory=list)
    networks: list[specs_pb2.NetworkSpec] = field(default_factory=list)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)

    def origin(self, kind: str, name: str) -> str:
        """ "file:line" of the document that defined ``kind`` ("Service", "Network") ``name``."""
        try:
            return self.origins[(kind.capitalize(), name)]
        except KeyError:
            raise NotFoundError(f"no {kind} named {name!r} in this manifest") from None


# ---- step 2: decode a document against the schema ------------------------------------


class _Decoder:
    """Walks one document with its schema; collects problems and the line of every path."""

    def __init__(self, filename: str, doc_mark: Mark) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        self.marks: dict[str, Mark] = {"": doc_mark}

    def report(self, mark: Mark, path: str, message: str, accepted: str | None = None) -> Any:
        self.problems.append(Problem(path, message, accepted).at(self.filename, mark.line))
        return _INVALID

    def locate(self, path: str) -> Mark:
        """The line of ``path``, or of its nearest ancestor that was written."""
        while path not in self.marks:
            path = parent_path(path)
        return self.marks[path]

    def decode(self, value: Any, typ: Type, path: str, mark: Mark, raw: str | None) -> Any:
        if isinstance(typ, Scalar):
            return self._scalar(value, typ, path, mark, raw)
        if isinstance(typ, OneOf):
            return self._one_of(value, typ, path, mark, raw)
        if isinstance(typ, ListOf):
            return self._list(value, typ, path, mark)
        if isinstance(typ, MapOf):
            return self._map(value, typ, path, mark)
        return self._obj(value, typ, path, mark)

    def _scalar(self, value: Any, typ: Scalar, path: str, mark: Mark, raw: str | None) -> Any:
        if isinstance(value, dict | list):
            return self.report(mark, path, f"expected {typ.accepted}, got {describe_value(value)}")
        try:
            return typ.parse(value, raw)
        except Invalid as exc:
            return self.report(mark, path, exc.message, exc.accepted)

    def _one_of(self, value: Any, typ: OneOf, path: str, mark: Mark, raw: str | None) -> Any:
        if value is None:  # an empty collection, as for plain lists and mappings
            alt = typ.list or typ.map or typ.scalar
        elif isinstance(value, dict):
            alt = typ.map
        elif isinstance(value, list):
            alt = typ.list
        else:
            alt = typ.scalar
        if alt is None:
            return self.report(mark, path, f"expected {typ.accepted}, got {describe_value(value)}")
        return self.decode(value, alt, path, mark, raw)

    def _list(self, value: Any, typ: ListOf, path: str, mark: Mark) -> Any:
        if value is None:
            return []
        if not isinstance(value, PosList):
            return self.report(mark, path, f"expected {typ.accepted}, got {describe_value(value)}")
        out, before = [], len(self.problems)
        for index, item in enumerate(value):
            item_path, item_mark = join_index(path, index), value.item_marks[index]
            self.marks[item_path] = item_mark
            out.append(self.decode(item, typ.item, item_path, item_mark, value.raws[index]))
        return out if len(self.problems) == before else _INVALID

    def _map(self, value: Any, typ: MapOf, path: str, mark: Mark) -> Any:
        if value is None:
            value = PosDict(mark)
        if not isinstance(value, PosDict):
            return self.report(mark, path, f"expected {typ.accepted}, got {describe_value(value)}")
        out, before = {}, len(self.problems)
        for index, (key, item) in enumerate(value.items()):
            key_path, key_mark = join_key(path, key), value.key_marks[key]
            self.marks[key_path] = key_mark
            self.marks[join_index(path, index)] = key_mark  # validate names env by index
            if typ.check_key is not None:
                try:
                    typ.check_key(key)
                except Invalid as exc:
                    self.report(key_mark, key_path, exc.message, exc.accepted)
                    continue
            out[key] = self.decode(item, typ.value, key_path, key_mark, value.raws[key])
        if len(self.problems) != before:
            return _INVALID
        return typ.convert(out) if typ.convert is not None else out

    def _obj(self, value: Any, typ: Obj, path: str, mark: Mark) -> Any:
        if value is None:
            value = PosDict(mark)
        if not isinstance(value, PosDict):
            return self.report(mark, path, f"expected {typ.accepted}, got {describe_value(value)}")
        out, before = {}, len(self.problems)
        for key, item in value.items():
            key_path, key_mark = join_key(path, key), value.key_marks[key]
            f = typ.by_name.get(key)
            if f is None:
                self._unknown(typ, key, path, key_mark)
                continue
            self.marks[key_path] = key_mark
            decoded = self.decode(item, f.type, key_path, key_mark, value.raws[key])
            if decoded is not _INVALID:
                out[key] = decoded
        for f in typ.fields:
            if f.name in value:
                continue
            if f.required:
                self.report(mark, join_key(path, f.name), "required field missing", f.type.accepted)
            elif f.default is not None:
                out[f.name] = f.default
            elif isinstance(f.type, Obj) and f.type.convert is None:
                out[f.name] = self._obj(None, f.type, join_key(path, f.name), mark)  # defaults
        if typ.convert is None:
            return out
        if len(self.problems) != before:
            return _INVALID
        try:
            return typ.convert(out)
        except Invalid as exc:
            return self.report(mark, path, exc.message, exc.accepted)

    def _unknown(self, typ: Obj, key: str, path: str, mark: Mark) -> None:
        hint = _suggest(typ, key)
        if not hint and typ.unknown is not None:
            explained = typ.unknown(key)
            self.report(mark, join_key(path, key), explained.message, explained.accepted)
            return
        if hint:
            hint = f"{path}.{hint}" if path else hint  # hint may be a dotted path itself
        message = "unknown field" + (f"; did you mean {hint!r}?" if hint else "")
        accepted = ", ".join(f.name for f in typ.fields)
        self.report(mark, join_key(path, key), message, accepted)


def _suggest(typ: Obj, key: str) -> str | None:
    """The field ``key`` was probably meant to be, as a path relative to ``typ``."""
    for f in typ.fields:
        if key in f.aliases or key.lower() == f.name.lower():
            return f.name
    close = difflib.get_close_matches(key, [f.name for f in typ.fields], n=1, cutoff=0.6)
    if close:
        return close[0]
    for f in typ.fields:  # a field written one level too high: "image" beside "spec"
        if isinstance(f.type, Obj) and f.type.convert is None:
            nested = _suggest_exact(f.type, key)
            if nested:
                return f"{f.name}.{nested}"
    return None


def _suggest_exact(typ: Obj, key: str) -> str | None:
    for f in typ.fields:
        if f.name == key:
            return f.name
        if isinstance(f.type, Obj) and f.type.convert is None:
            nested = _suggest_exact(f.type, key)
            if nested:
                return f"{f.name}.{nested}"
    return None


# ---- building the protobuf ---------------------------------------------------------------


def _assign(message: Message, obj: Obj, values: dict[str, Any]) -> None:
    for f in obj.fields:
        if f.name not in values:
            continue
        value = values[f.name]
        if isinstance(f.type, Obj) and f.type.convert is None:
            _assign(message, f.type, value)
        elif f.target is not None:
            _set(message, f.target, value)


def _set(message: Message, target: str, value: Any) -> None:
    *parents, last = target.split(".")
    for part in parents:
        message = getattr(message, part)
    if isinstance(value, Message):
        getattr(message, last).CopyFrom(value)
    elif isinstance(value, list):
        getattr(message, last).extend(value)
    elif isinstance(value, dict):
        getattr(message, last).update(value)
    else:
        setattr(message, last, value)


def _prune(message: Message) -> None:
    """Clear sub-messages left empty (``resources: {}``), so a spec has one spelling.

    Durations are kept even when zero: "delay: 0s" says something "no delay" does not.
    """
    for fd, value in message.ListFields():
        if fd.message_type is None or fd.is_repeated:
            continue
        if isinstance(value, Duration):
            continue
        _prune(value)
        if value.ByteSize() == 0:
            message.ClearField(fd.name)


def _header(root: PosDict, decoder: _Decoder, name: str) -> Any:
    """Decode the top-level ``name`` ("kind", "apiVersion"), reporting it when missing."""
    f = schema.SERVICE.by_name[name]
    if name not in root:
        return decoder.report(root.mark, name, "required field missing", f.type.accepted)
    return decoder.decode(root[name], f.type, name, root.key_marks[name], root.raws[name])


def _kind(root: PosDict, decoder: _Decoder) -> str | None:
    """The document's kind; None, with problems reported, when it has none we know."""
    kind = _header(root, decoder, "kind")
    if kind is not _INVALID:
        return kind
    _header(root, decoder, "apiVersion")  # the rest cannot be checked, the version can
    return None


# ---- the whole apply --------------------------------------------------------------------


@dataclass
class _Entry:
    kind: str
    spec: Any
    filename: str
    decoder: _Decoder

    def where(self, path: str) -> str:
        return f"{self.filename}:{self.decoder.locate(path).line}"


class _Collector:
    """Accumulates specs and problems over all files of one apply."""

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.problems: list[list[Problem]] = []  # one list per file, in file order

    def add_problem(self, problem: Problem) -> None:
        self.problems.append([problem])

    def add_text(self, text: str, filename: str) -> None:
        documents, problems = parse_documents(text, filename)
        for document in documents:
            problems += self._add_document(document.root, document.mark, filename)
        self.problems.append(sorted(problems, key=lambda p: p.line or 0))

    def _add_document(self, root: Any, mark: Mark, filename: str) -> list[Problem]:
        decoder = _Decoder(filename, mark)
        if not isinstance(root, PosDict):
            message = f"expected a mapping with apiVersion, kind, metadata and spec, got {describe_value(root)}"
            return [Problem("(document)", message).at(filename, mark.line)]
        kind = _kind(root, decoder)
        if kind is None:
            return decoder.problems
        obj = schema.SCHEMAS[kind]
        values = decoder.decode(root, obj, "", mark, None)
        spec = schema.SPEC_TYPES[kind]()
        _assign(spec, obj, values)
        _prune(spec)
        checked = check_service(spec) if kind == "Service" else check_network(spec)
        decoded_paths = [p.path for p in decoder.problems]
        for problem in checked:
            if not any(related(problem.path, p) for p in decoded_paths):
                decoder.problems.append(problem.at(filename, decoder.locate(problem.path).line))
        if not decoder.problems:
            self.entries.append(_Entry(kind, spec, filename, decoder))
        return decoder.problems

    def finish(self) -> Manifest:
        cross = self._duplicates() + self._overlaps() + self._port_clashes()
        problems = [p for group in self.problems for p in group] + cross
        if problems:
            raise ValidationError([str(p) for p in problems])
        manifest = Manifest()
        for entry in self.entries:
            target = manifest.services if entry.kind == "Service" else manifest.networks
            target.append(entry.spec)
            manifest.origins[(entry.kind, entry.spec.name)] = entry.where("")
        return manifest

    def _duplicates(self) -> list[Problem]:
        problems, seen = [], {}
        for entry in self.entries:
            key = (entry.kind, entry.spec.name)
            if key in seen:
                first = seen[key].where("metadata.name")
                line = entry.decoder.locate("metadata.name").line
                message = (
                    f"duplicate {entry.kind} name {entry.spec.name!r} (also defined at {first})"
                )
                problems.append(Problem("metadata.name", message).at(entry.filename, line))
            else:
                seen[key] = entry
        return problems

    def _overlaps(self) -> list[Problem]:
        problems: list[Problem] = []
        earlier: list[tuple[ipaddress.IPv4Network, _Entry]] = []
        for entry in self.entries:
            if entry.kind != "Network" or not entry.spec.subnet:
                continue
            subnet = ipaddress.IPv4Network(entry.spec.subnet)
            for other_subnet, other in earlier:
                if subnet.overlaps(other_subnet):
                    message = (
                        f"{subnet} overlaps network {other.spec.name!r} ({other_subnet} at "
                        f"{other.where('spec.subnet')})"
                    )
                    line = entry.decoder.locate("spec.subnet").line
                    problems.append(Problem("spec.subnet", message).at(entry.filename, line))
            earlier.append((subnet, entry))
        return problems

    def _port_clashes(self) -> list[Problem]:
        """A host port asked for by two services of one apply: wherever the scheduler put
        them, the second would wait for a node the first does not use."""
        services = [e for e in self.entries if e.kind == "Service"]
        problems = []
        for index, earlier, key in port_clashes([e.spec for e in services]):
            entry, other = services[index], services[earlier]
            path = _port_path(entry.spec, key)
            message = (
                f"published port {port_text(key)} is also published by service "
                f"{other.spec.name!r} (at {other.where(_port_path(other.spec, key))})"
            )
            problems.append(
                Problem(path, message).at(entry.filename, entry.decoder.locate(path).line)
            )
        return problems


def _port_path(spec: specs_pb2.ServiceSpec, key: tuple[int, str]) -> str:
    index = next(i for i, p in enumerate(spec.ports) if port_key(p) == key)
    return f"spec.ports[{index}]"


def load_text(text: str, filename: str = "<string>") -> Manifest:
    """The specs in one YAML text; ``filename`` is what errors call it."""
    collector = _Collector()
    collector.add_text(text, filename)
    return collector.finish()


def load_paths(paths: Iterable[str | Path]) -> Manifest:
    """The specs in files and directories (their *.yaml and *.yml, sorted); "-" is stdin.

    Raises ValidationError listing every problem of every file; nothing is returned then.
    """
    paths = list(paths)
    collector = _Collector()
    files, seen = [], set()
    for given in paths:
        for path in _expand(Path(given), collector):
            key = path.resolve() if str(path) != "-" else path
            if key not in seen:
                seen.add(key)
                files.append(path)
    for path in files:
        text = _read(path, collector)
        if text is not None:
            collector.add_text(text, "<stdin>" if str(path) == "-" else str(path))
    if not collector.entries and not any(collector.problems):
        names = ", ".join(str(p) for p in paths) or "(no paths given)"
        collector.add_problem(Problem("", f"no manifests found in {names}"))
    return collector.finish()


def _expand(path: Path, collector: _Collector) -> list[Path]:
    if str(path) == "-" or path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(
            p
            for p in path.iterdir()
            if p.suffix in MANIFEST_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        if not found:
            collector.add_problem(
                Problem("", "no *.yaml or *.yml files in this directory").at(str(path), None)
            )
        return found
    collector.add_problem(Problem("", "no such file or directory").at(str(path), None))
    return []


def _read(path: Path, collector: _Collector) -> str | None:
    try:
        if str(path) == "-":
            return sys.stdin.read()
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        collector.add_problem(Problem("", "not UTF-8 text").at(str(path), None))
    except OSError as exc:
        collector.add_problem(Problem("", f"cannot read: {exc.strerror}").at(str(path), None))
    return None
