"""The problem record every manifest check produces, and how field paths are spelled.

The YAML reader, the schema decoder and the value validators all report problems; the
loader attaches file and line and prints them. They share one record and one spelling of
field paths ("spec.networks[1].aliases[0]", 'metadata.labels["app.kubernetes.io/name"]'),
so a path a validator names on a protobuf can be looked up in the positions the YAML
reader recorded. This module imports nothing of orch, so the manager can use it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_LAST_STEP = re.compile(r'(\[\d+\]|\["(?:[^"\\]|\\.)*"\]|\.[^.\[]*)$')


def join_key(path: str, key: str) -> str:
    """The path of ``key`` inside the mapping at ``path``."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{escaped}"]'


def join_index(path: str, index: int) -> str:
    """The path of item ``index`` of the list at ``path``."""
    return f"{path}[{index}]"


def parent_path(path: str) -> str:
    """``spec.env[2]`` -> ``spec.env`` -> ``spec`` -> ``""``."""
    match = _LAST_STEP.search(path)
    return "" if match is None else path[: match.start()]


def related(a: str, b: str) -> bool:
    """True when one path is the other or lies inside it (``spec`` and ``spec.image``)."""
    if a == b:
        return True
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return long.startswith(short) and long[len(short)] in ".["


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where it is, what is wrong, what would be accepted."""

    path: str
    """Field path in the manifest ("spec.replicas"); "" when about a whole file or document."""
    message: str
    """What is wrong, e.g. "expected an integer >= 0, got -1"."""
    accepted: str | None = None
    """What would be accepted, when the message does not already say it."""
    file: str | None = None
    line: int | None = None
    """1-based line; None when the problem is about a file as a whole."""
    column: int | None = None
    """1-based column; only YAML syntax errors carry one."""

    def at(self, file: str, line: int | None, column: int | None = None) -> Problem:
        return replace(self, file=file, line=line, column=column)

    def __str__(self) -> str:
        text = self.message
        if self.path:
            text = f"{self.path}: {text}"
        if self.accepted:
            text = f"{text} (accepted: {self.accepted})"
        if self.file is None:
            return text
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {text}"


def describe_value(value: object) -> str:
    """How a YAML value is named in "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value} (a {type(value).__name__})"
