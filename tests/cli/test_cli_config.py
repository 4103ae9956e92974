"""config.py: where the CLI finds a manager."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.cli.config import (
    DEFAULT_STATE_DIR,
    default_state_dir,
    manager_address_file,
    parse_addresses,
    resolve_manager_addresses,
)
from orch.errors import OrchError, ValidationError


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    manager_address_file(tmp_path).write_text("10.0.0.1:7701,10.0.0.2:7701\n")
    return tmp_path


def test_flag_beats_env_beats_file(state_dir: Path) -> None:
    env = {"ORCH_MANAGER": "env-host:1", "ORCH_STATE_DIR": str(state_dir)}
    assert resolve_manager_addresses("flag-host:2", env=env) == ["flag-host:2"]
    assert resolve_manager_addresses(None, env=env) == ["env-host:1"]
    del env["ORCH_MANAGER"]
    assert resolve_manager_addresses(None, env=env) == ["10.0.0.1:7701", "10.0.0.2:7701"]


def test_explicit_state_dir_wins_over_env(state_dir: Path, tmp_path: Path) -> None:
    env = {"ORCH_STATE_DIR": str(tmp_path / "elsewhere")}
    assert resolve_manager_addresses(env=env, state_dir=state_dir)[0] == "10.0.0.1:7701"


def test_default_state_dir() -> None:
    assert default_state_dir({}) == DEFAULT_STATE_DIR == Path("/var/lib/orch/dev")
    assert default_state_dir({"ORCH_STATE_DIR": "/tmp/x"}) == Path("/tmp/x")
    assert manager_address_file(Path("/tmp/x")) == Path("/tmp/x/managers")


@pytest.mark.parametrize("content", [None, "", " \n"])
def test_nothing_found_names_every_source(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        manager_address_file(tmp_path).write_text(content)
    with pytest.raises(OrchError) as info:
        resolve_manager_addresses(None, env={"ORCH_STATE_DIR": str(tmp_path)})
    message = str(info.value)
    assert "--manager" in message and "ORCH_MANAGER" in message
    assert str(tmp_path / "managers") in message


def test_empty_flag_and_env_fall_through(state_dir: Path) -> None:
    env = {"ORCH_MANAGER": " ", "ORCH_STATE_DIR": str(state_dir)}
    assert resolve_manager_addresses("", env=env) == ["10.0.0.1:7701", "10.0.0.2:7701"]


def test_parse_addresses_accepts_names_ipv4_ipv6_and_separators() -> None:
    assert parse_addresses(" a:1, 10.0.0.1:7701\n[::1]:7701 ,", source="x") == [
        "a:1",
        "10.0.0.1:7701",
        "[::1]:7701",
    ]


@pytest.mark.parametrize("bad", ["host", "host:", ":80", "host:0", "host:70000", "::1:80", "a:b"])
def test_parse_addresses_rejects(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_addresses(f"ok:1,{bad}", source="--manager")
    assert info.value.problems == [f"--manager: {bad!r} is not HOST:PORT"]


def test_bad_address_in_the_file_names_the_file(tmp_path: Path) -> None:
    manager_address_file(tmp_path).write_text("nonsense")
    with pytest.raises(ValidationError, match="managers: 'nonsense' is not HOST:PORT"):
        resolve_manager_addresses(None, env={"ORCH_STATE_DIR": str(tmp_path)})
