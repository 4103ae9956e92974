"""Argument parsing: usage errors are argparse's exit 2, before any call is made."""

from __future__ import annotations

import argparse
import io

import pytest

from orch.cli.commands.changes import scale_arg
from orch.cli.commands.logs import tail_arg
from orch.cli.main import build_parser, main


@pytest.mark.parametrize(
    ("text", "parsed"), [("web=5", ("web", 5)), ("api=0", ("api", 0)), ("a-b=10", ("a-b", 10))]
)
def test_scale_arg(text: str, parsed: tuple[str, int]) -> None:
    assert scale_arg(text) == parsed


@pytest.mark.parametrize(
    "text", ["web", "web=", "=5", "web=-1", "web=1.5", "web=x", "web=5=6", f"w={2**64}"]
)
def test_scale_arg_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="SERVICE=REPLICAS"):
        scale_arg(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["scale"],
        ["scale", "web=x"],
        ["scale", "web=1", "web=2"],
        ["apply"],
        ["ps", "-o", "xml"],
        ["inspect", "volume", "x"],
        ["logs", "web", "--tail", "-3"],
        ["dev", "up", "--nodes", "0"],
        ["--timeout", "0", "ls"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv, env={})
    assert info.value.code == 2
    assert "usage: orch" in capsys.readouterr().err


def test_connection_flags_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--manager", "a:1", "--timeout", "2", "ps"])
    after = parser.parse_args(["ps", "--manager", "a:1", "--timeout", "2"])
    neither = parser.parse_args(["ps"])
    assert (before.manager, before.timeout) == (after.manager, after.timeout) == ("a:1", 2.0)
    assert (neither.manager, neither.timeout) == (None, None)


def test_tail_arg() -> None:
    assert tail_arg("all") == -1
    assert tail_arg("0") == 0
    assert tail_arg("25") == 25


def test_listings_default_to_table_inspect_to_yaml() -> None:
    parser = build_parser()
    assert parser.parse_args(["ls"]).output == "table"
    assert parser.parse_args(["inspect", "task", "x"]).output == "yaml"
    with pytest.raises(SystemExit):
        parser.parse_args(["inspect", "task", "x", "-o", "table"])


def test_bad_manager_address_is_one_line_exit_1() -> None:
    err = io.StringIO()
    assert main(["--manager", "nonsense", "ls"], err=err, env={}) == 1
    assert err.getvalue() == "orch: --manager: 'nonsense' is not HOST:PORT\n"


def test_orch_debug_adds_the_traceback() -> None:
    err = io.StringIO()
    assert main(["--manager", "nonsense", "ls"], err=err, env={"ORCH_DEBUG": "1"}) == 1
    text = err.getvalue()
    assert text.startswith("Traceback (most recent call last):")
    assert text.endswith("orch: --manager: 'nonsense' is not HOST:PORT\n")


def test_unexpected_exception_is_one_line_unless_debugging(monkeypatch) -> None:
    from orch.cli.commands import listings

    def broken(ctx: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(listings, "run_ls", broken)
    err = io.StringIO()
    assert main(["ls"], err=err, env={}) == 1
    assert err.getvalue() == (
        "orch: internal error: RuntimeError: boom (ORCH_DEBUG=1 shows a traceback)\n"
    )
    with pytest.raises(RuntimeError, match="boom"):
        main(["ls"], err=io.StringIO(), env={"ORCH_DEBUG": "1"})
