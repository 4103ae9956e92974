"""`orch completion bash` sourced in a real bash: the completion function driven the way
bash drives it (COMP_WORDS, COMP_CWORD), names coming from a fake server through the
hidden `orch __complete`."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from orch.cli.completion import command_table
from orch.cli.main import build_parser
from orch.proto import control_pb2

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


async def _complete(orch, tmp_path: Path, manager: str, *words: str) -> list[str]:
    """COMPREPLY for the command line ``words`` (the last one is being completed)."""
    script = tmp_path / "orch.bash"
    script.write_text((await orch("completion", "bash")).out)
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}\n"
        "complete -p orch\n"  # the function is registered for orch
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        "_orch_complete\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path / "home"),
        "ORCH_CONFIG": str(tmp_path / "config.yaml"),
        "ORCH_STATE_DIR": str(tmp_path / "state"),
        "ORCH_MANAGER": manager,
    }
    proc = await asyncio.create_subprocess_exec(
        "bash", "--norc", "-c", program, env=env, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    lines = stdout.decode().splitlines()
    assert lines[0] == "complete -F _orch_complete orch"
    return [line for line in lines[1:] if line]


async def test_sc_completes_to_scale_then_a_service(orch, fake_server, tmp_path) -> None:
    api = control_pb2.ServiceInfo()
    api.CopyFrom(fake_server.control.services["web"])
    api.service.spec.name = "api"
    fake_server.control.services["api"] = api
    assert await _complete(orch, tmp_path, fake_server.address, "orch", "sc") == ["scale"]
    # scale takes SERVICE=REPLICAS: the name comes with its "=" (and no space after).
    names = await _complete(orch, tmp_path, fake_server.address, "orch", "scale", "")
    assert names == ["api=", "web="]
    assert await _complete(orch, tmp_path, fake_server.address, "orch", "scale", "w") == ["web="]


async def test_names_after_flags_and_of_other_kinds(orch, fake_server, tmp_path) -> None:
    address = fake_server.address
    line = ("orch", "--timeout", "5", "logs", "")
    task_ids = [t.id for t in fake_server.control.tasks]
    tasks = sorted(["web.1", "web.2", *task_ids])
    assert await _complete(orch, tmp_path, address, *line) == ["web", *tasks]
    assert await _complete(orch, tmp_path, address, "orch", "node", "drain", "") == [
        "node1",
        "node2",
    ]
    assert await _complete(orch, tmp_path, address, "orch", "ps", "-o", "") == [
        "table",
        "json",
        "yaml",
    ]


async def test_names_come_from_the_manager_on_the_line(
    orch, fake_server, dead_address, tmp_path
) -> None:
    line = ("orch", "--manager", fake_server.address, "rm", "")
    assert await _complete(orch, tmp_path, dead_address, *line) == ["web"]
    line = ("orch", "rm", f"--manager={fake_server.address}", "")
    assert await _complete(orch, tmp_path, dead_address, *line) == ["web"]


async def test_an_unreachable_cluster_completes_nothing_quietly(
    orch, dead_address, tmp_path
) -> None:
    assert await _complete(orch, tmp_path, dead_address, "orch", "rm", "") == []
    result = await orch("__complete", "services", "--manager", dead_address)
    assert (result.returncode, result.out, result.stderr) == (0, "", "")


def test_every_command_is_in_the_table_and_hidden_ones_are_not() -> None:
    table = command_table(build_parser())
    assert "orch scale" in table and "orch node drain" in table
    assert table["orch scale"].kinds == ["services="]
    assert table["orch logs"].kinds == ["services", "tasks"]
    assert "__complete" not in table["orch"].subcommands


async def test_zsh_script_wraps_the_bash_one(orch) -> None:
    zsh = (await orch("completion", "zsh")).out
    assert "bashcompinit" in zsh and "complete -F _orch_complete orch" in zsh
