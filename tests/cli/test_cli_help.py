"""Every command's --help ends with examples, and every example parses."""

from __future__ import annotations

import shlex

import pytest

from orch.cli.helptext import EXAMPLES, iter_parsers
from orch.cli.main import build_parser


def test_every_command_has_examples() -> None:
    missing = [
        path
        for path, parser in iter_parsers(build_parser())
        if not (parser.epilog or "").startswith("examples:\n")
    ]
    assert missing == []


@pytest.mark.parametrize("example", sorted({e for lines in EXAMPLES.values() for e in lines}))
def test_every_example_parses(example: str) -> None:
    words = shlex.split(example, comments=True)
    while words[0].split("=")[0].isupper():  # VAR=x before the command
        words.pop(0)
    if ">" in words:
        words = words[: words.index(">")]
    if "<(orch" in example:  # source <(orch completion bash)
        words = ["orch", "completion", "bash"]
    assert words[0] == "orch"
    build_parser().parse_args(words[1:])
