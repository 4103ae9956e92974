"""`orch node ...` argument parsing: label syntax, which request each form sends, and
usage errors (argparse's exit 2) before any call is made."""

from __future__ import annotations

import argparse

import pytest

from orch.cli.commands.nodes import label_arg, label_request
from orch.cli.main import build_parser, main
from orch.proto import types_pb2


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("zone=a", ("zone", "a")),
        ("zone=", ("zone", "")),
        ("url=a=b", ("url", "a=b")),
        ("zone-", ("zone", None)),
        ("a-b-", ("a-b", None)),
        ("example.com/tier=db", ("example.com/tier", "db")),
    ],
)
def test_label_arg(text: str, parsed: tuple[str, str | None]) -> None:
    assert label_arg(text) == parsed


@pytest.mark.parametrize("text", ["zone", "=a", "-", "zone+"])
def test_label_arg_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"KEY=VALUE|key is empty"):
        label_arg(text)


def test_label_request_sets_then_removes() -> None:
    request = label_request("node3", [("zone", "a"), ("rack", None), ("tier", "")])
    assert request.id == "node3"
    assert dict(request.add_labels) == {"zone": "a", "tier": ""}
    assert list(request.remove_labels) == ["rack"]
    assert request.availability == types_pb2.AVAILABILITY_UNSPECIFIED


@pytest.mark.parametrize(
    ("argv", "func", "extra"),
    [
        (["node", "drain", "node1"], "run_availability", {"nodes": ["node1"]}),
        (["node", "pause", "a", "b"], "run_availability", {"nodes": ["a", "b"]}),
        (["node", "activate", "node1"], "run_availability", {"action": "activate"}),
        (["node", "rm", "node1"], "run_rm", {"force": False}),
        (["node", "rm", "--force", "node1"], "run_rm", {"force": True}),
        (["node", "inspect", "node1"], "run_inspect", {"kind": "node", "output": "yaml"}),
        (["node", "ls", "-o", "json"], "run_nodes", {"output": "json"}),
        (["node", "label", "n", "a=1", "b-"], "run_label", {"changes": [("a", "1"), ("b", None)]}),
    ],
)
def test_node_commands_parse(argv: list[str], func: str, extra: dict) -> None:
    args = build_parser().parse_args(argv)
    assert args.func.__name__ == func
    for key, value in extra.items():
        assert getattr(args, key) == value


@pytest.mark.parametrize(
    "argv",
    [
        ["node"],
        ["node", "drain"],
        ["node", "cordon", "node1"],
        ["node", "label", "node1"],
        ["node", "label", "node1", "zone"],
        ["node", "label", "node1", "=a"],
        ["node", "label", "node1", "zone=a", "zone-"],
        ["node", "rm"],
        ["node", "inspect", "node1", "-o", "table"],
    ],
)
def test_node_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv, env={})
    assert info.value.code == 2
    assert "usage: orch" in capsys.readouterr().err
