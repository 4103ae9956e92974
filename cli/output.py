"""How the CLI prints: aligned tables, JSON and YAML.

Listings hand records (plain dicts, see views.py) and a table function to :func:`emit`;
the ``-o`` flag picks the form. Tables are columns padded to their widest cell with a
header row and no trailing spaces, so they read well and still split on runs of spaces.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import yaml

from orch.cli.views import Table

FORMATS = ("table", "json", "yaml")

COLUMN_GAP = 3
"""Spaces between table columns (kubectl and docker use 3)."""


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns left-aligned and padded to the widest cell; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, table has {len(headers)} columns")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    gap = " " * COLUMN_GAP
    lines = []
    for cells in [list(headers), *rows]:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        lines.append(gap.join(padded).rstrip())
    return "\n".join(lines) + "\n"


def render_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def render(fmt: str, data: Any, table: Callable[[Any], Table] | None = None) -> str:
    """``data`` in the given format; "table" needs ``table`` (data -> headers, rows)."""
    if fmt == "json":
        return render_json(data)
    if fmt == "yaml":
        return render_yaml(data)
    if fmt == "table" and table is not None:
        return render_table(*table(data))
    raise ValueError(f"unknown output format {fmt!r}")


def emit(out: TextIO, fmt: str, data: Any, table: Callable[[Any], Table] | None = None) -> None:
    out.write(render(fmt, data, table))
    out.flush()
