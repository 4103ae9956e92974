"""output.py: aligned tables, JSON and YAML."""

from __future__ import annotations

import json

import pytest
import yaml

from orch.cli import output


def test_table_columns_line_up() -> None:
    text = output.render_table(
        ["ID", "NAME", "STATE"],
        [["a1", "web.1", "running 3 seconds ago"], ["b22222", "db.10", "failed"]],
    )
    lines = text.splitlines()
    assert lines == [
        "ID       NAME    STATE",
        "a1       web.1   running 3 seconds ago",
        "b22222   db.10   failed",
    ]
    # Every column starts at the same offset on every line.
    for column in ("NAME", "STATE"):
        offset = lines[0].index(column)
        assert all(line[offset - 1] == " " and line[offset] != " " for line in lines)


def test_table_has_no_trailing_spaces_and_keeps_empty_cells() -> None:
    text = output.render_table(["A", "B", "C"], [["x", "", ""], ["", "yy", "z"]])
    assert text == "A   B    C\nx\n    yy   z\n"
    assert not any(line.endswith(" ") for line in text.splitlines())


def test_table_with_no_rows_is_the_header() -> None:
    assert output.render_table(["NAME", "IMAGE"], []) == "NAME   IMAGE\n"


def test_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="2 cells"):
        output.render_table(["A", "B", "C"], [["1", "2"]])


def test_json_and_yaml_round_trip() -> None:
    records = [
        {"id": "x", "created_at": "2024-05-01T12:00:00Z", "exit_code": None, "addresses": []}
    ]
    assert json.loads(output.render("json", records)) == records
    # The timestamp stays a string in YAML (not a YAML date), and key order is kept.
    text = output.render("yaml", records)
    assert yaml.safe_load(text) == records
    assert text.index("id:") < text.index("created_at:")


def test_render_table_needs_a_table_function() -> None:
    assert output.render("table", [1, 2], lambda xs: (["N"], [[str(x)] for x in xs])) == "N\n1\n2\n"
    with pytest.raises(ValueError):
        output.render("table", [])
    with pytest.raises(ValueError):
        output.render("xml", [])
