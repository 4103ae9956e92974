"""Contexts: the config file (contexts.py), `orch context`, and where a context sits in the
lookup of the manager address (flag > env > current context > the local cluster's file)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from tests_support import test_pki

from orch.cli import contexts
from orch.cli.config import manager_address_file, resolve_managers
from orch.errors import OrchError


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ORCH_CONFIG": str(tmp_path / "cfg" / "orch" / "config.yaml"),
        "ORCH_STATE_DIR": str(tmp_path / "state"),
        **extra,
    }


# --- the file -------------------------------------------------------------------------------


def test_saved_file_is_0600_in_a_0700_dir_and_reads_back(tmp_path: Path) -> None:
    env = _env(tmp_path)
    prod = contexts.ClusterContext("prod", ("10.0.0.1:7701", "[::1]:7701"), "/etc/orch/prod")
    contexts.put(env, prod, make_current=True)
    path = contexts.config_path(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    config = contexts.load(env)
    assert config.current == "prod" and config.contexts == {"prod": prod}


def test_default_place_follows_home() -> None:
    path = contexts.config_path({"HOME": "/home/a"})
    assert path == Path("/home/a/.config/orch/config.yaml")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("current: a\ncontexts:\n  a: {managers: [x:1]\n", 4, "YAML syntax error"),
        ("current: a\ncontexts:\n  a:\n    managers: [nonsense]\n", 3, "'nonsense' is not HOST"),
        ("current: a\ncolour: blue\n", 2, "unknown key 'colour' (accepted: current, contexts)"),
        ("contexts:\n  a: {managers: [x:1], tls: /d}\n", 2, "unknown key 'tls'"),
        ("contexts:\n  a: 5\n", 2, "expected a mapping with 'managers'"),
        ("- a\n", 1, "expected a mapping"),
        ("contexts:\n  'bad name': {managers: [x:1]}\n", 2, "is not a context name"),
        ("contexts: []\n", 1, "expected a mapping of name -> context"),
        ("contexts:\n  a: {managers: []}\n", 2, "managers: expected at least one HOST:PORT"),
        ("current: b\ncontexts:\n  a: {managers: [x:1]}\n", 1, "no context 'b' (contexts: a)"),
    ],
)
def test_a_malformed_file_is_one_line_with_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    env = _env(tmp_path)
    path = contexts.config_path(env)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(OrchError) as info:
        contexts.load(env)
    assert len(str(info.value).splitlines()) == 1
    assert str(info.value).startswith(f"{path}:{line}:")
    assert message in str(info.value)


def test_a_file_over_1_mib_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path)
    path = contexts.config_path(env)
    path.parent.mkdir(parents=True)
    path.write_text("# " + "x" * contexts.MAX_CONFIG_BYTES)
    with pytest.raises(OrchError, match="larger than 1048576 bytes"):
        contexts.load(env)


# --- precedence -----------------------------------------------------------------------------


def test_precedence_flag_env_context_then_dev_file(tmp_path: Path) -> None:
    env = _env(tmp_path, ORCH_MANAGER="env-host:2")
    manager_address_file(tmp_path / "state").parent.mkdir(parents=True)
    manager_address_file(tmp_path / "state").write_text("dev-host:4\n")
    contexts.put(env, contexts.ClusterContext("c", ("ctx-host:3",)), make_current=True)

    assert resolve_managers("flag-host:1", env=env).addresses == ["flag-host:1"]
    assert resolve_managers(None, env=env).addresses == ["env-host:2"]
    del env["ORCH_MANAGER"]
    found = resolve_managers(None, env=env)
    assert (found.addresses, found.context) == (["ctx-host:3"], "c")
    config = contexts.load(env)
    config.current = ""
    contexts.save(config)
    found = resolve_managers(None, env=env)
    assert found.addresses == ["dev-host:4"]
    assert found.source == str(manager_address_file(tmp_path / "state"))


# --- the commands, against real servers -----------------------------------------------------


async def test_switching_contexts_switches_clusters(
    orch, fake_server, other_fake_server, tmp_path
) -> None:
    other_fake_server.control.services.pop("web")  # tell the two clusters apart
    a = await orch("context", "add", "a", "--manager", fake_server.address)
    assert a.returncode == 0, a.stderr
    tls = str(test_pki().write_admin(tmp_path / "b-tls"))  # context b's own credentials
    b = await orch("context", "add", "b", "--manager", other_fake_server.address, "--tls-dir", tls)
    assert b.returncode == 0, b.stderr

    first = await orch("ls", "-o", "json")  # the first context added became current
    assert [s["name"] for s in json.loads(first.out)] == ["web"]
    assert (await orch("context", "use", "b")).returncode == 0
    second = await orch("ls", "-o", "json")
    assert json.loads(second.out) == []
    assert [r[0] for r in fake_server.control.requests] == ["ListServices"]
    assert [r[0] for r in other_fake_server.control.requests] == ["ListServices"]

    listing = await orch("context", "ls", "-o", "json")
    assert [(c["name"], c["current"], c["tls_dir"]) for c in json.loads(listing.out)] == [
        ("a", False, ""),
        ("b", True, tls),
    ]


async def test_context_current_shows_the_winner(orch, fake_server, dead_address) -> None:
    await orch("context", "add", "a", "--manager", fake_server.address, "--tls-dir", "/tls")
    current = json.loads((await orch("context", "current", "-o", "json")).out)
    assert current["context"] == "a" and current["managers"] == [fake_server.address]
    assert current["source"].startswith("context a (") and current["tls_dir"] == "/tls"

    by_env = await orch("context", "current", "-o", "json", extra_env={"ORCH_MANAGER": "e:1"})
    assert json.loads(by_env.out)["source"] == "ORCH_MANAGER"
    by_flag = await orch(
        "context", "current", "--manager", "f:1", "-o", "json", extra_env={"ORCH_MANAGER": "e:1"}
    )
    assert json.loads(by_flag.out)["managers"] == ["f:1"]


async def test_context_errors_are_one_line(orch) -> None:
    unknown = await orch("context", "use", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("orch: no context nope in ")
    assert len(unknown.stderr.splitlines()) == 1
    empty = await orch("context", "add", "x", "--manager", " , ")
    assert empty.stderr == "orch: context x: expected at least one manager HOST:PORT\n"
    bad = await orch("context", "add", "x", "--manager", "nonsense")
    assert bad.stderr == "orch: --manager: 'nonsense' is not HOST:PORT\n"
    await orch("context", "add", "x", "--manager", "h:1")
    again = await orch("context", "add", "x", "--manager", "h:2")
    assert again.stderr.startswith("orch: context x exists")
    removed = await orch("context", "rm", "x")
    assert removed.returncode == 0
    assert json.loads((await orch("context", "ls", "-o", "json")).out) == []
