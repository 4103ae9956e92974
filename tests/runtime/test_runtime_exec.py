"""ContainerRuntime.exec on the real thing: `runc exec` into running busybox containers.

The command must run as the container's own process does (namespaces, cgroup, user, cwd,
env), report exit codes as Docker does (127/126 for not found / not executable), and
leave nothing running once killed. Each test's runtime fixture removes its containers.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from runtime_helpers import run, running
from tests_support import always, eventually

from orch.errors import ContainerError
from orch.runtime.containers import ContainerRuntime
from orch.runtime.exec import process_spec
from orch.runtime.images import ImageStore
from orch.runtime.model import ContainerConfig

pytestmark = pytest.mark.integration


def cgroup_of(pid: int | str) -> set[str]:
    """The cgroup paths of a process, one per hierarchy (v1 and v2 alike)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {
        line.split(":", 2)[2] for line in lines if not line.split(":", 2)[1].startswith("name=")
    }


def processes_in(rt: ContainerRuntime, cid: str) -> list[str]:
    """Command lines of the processes in the container's cgroup, seen from the host."""
    wanted = rt.cgroups_path(cid)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not any(p.endswith(wanted) for p in cgroup_of(pid)):
                continue
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


async def test_runs_as_the_container_does(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-as"
    await running(
        runtime, image_store, busybox_ref, cid,
        env=["FOO=bar", "KEEP=1"], user="nobody", workdir="/tmp", hostname="web-1",
    )  # fmt: skip
    script = (
        'echo "$FOO $KEEP $EXTRA $(id -u) $(pwd) $(hostname)"; '
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/cgroup >&2; exit 3"
    )
    code, out, err = await run(
        await runtime.exec(cid, ["sh", "-c", script], env=["FOO=over", "EXTRA=x"])
    )
    assert code == 3
    first, second = out.decode().splitlines()
    assert first == "over 1 x 65534 /tmp web-1"  # env merged over the container's, its user
    assert second.startswith("sh -c trap")  # pid 1 is the container's init: its pid ns
    exec_cgroups = {
        line.split(":", 2)[2]
        for line in err.decode().splitlines()
        if not line.split(":", 2)[1].startswith("name=")
    }
    # The container's cgroup namespace, whose root is the container's cgroup (that the
    # process really is in it, seen from the host, is checked in the kill test).
    assert exec_cgroups == {"/"}, err
    assert not list(runtime.container_dir(cid).glob("exec-*"))  # wait() tidied up


async def test_stdin_and_concurrent_waits(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-in"
    await running(runtime, image_store, busybox_ref, cid)
    proc = await runtime.exec(cid, ["sh", "-c", "read a; read b; echo $b $a"], stdin=True)
    code, out, _ = await run(proc, b"one\ntwo\n")
    assert (code, out) == (0, b"two one\n")
    assert await asyncio.gather(proc.wait(), proc.wait()) == [0, 0]
    no_stdin = await runtime.exec(cid, ["cat"])
    assert no_stdin.stdin is None
    assert (await run(no_stdin))[:2] == (0, b"")  # stdin is /dev/null: cat ends at once


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["no-such-command"], 127),
        (["/no/such/path"], 127),
        (["/etc/passwd"], 126),
        (["/tmp"], 126),
        (["sh", "-c", "exit 255"], 255),
        (["sh", "-c", "kill -TERM $$"], 143),
    ],
    ids=["not-in-path", "no-such-file", "not-executable", "directory", "exit-255", "signal"],
)
async def test_exit_codes_as_docker_reports_them(
    runtime: ContainerRuntime,
    image_store: ImageStore,
    busybox_ref: str,
    prefix: str,
    argv: list[str],
    code: int,
) -> None:
    cid = f"{prefix}-codes"
    await running(runtime, image_store, busybox_ref, cid)
    result, _, err = await run(await runtime.exec(cid, argv))
    assert result == code, err


async def test_not_running_or_missing_container_is_a_clear_error(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    with pytest.raises(ContainerError, match=f"container {prefix}-gone does not exist"):
        await runtime.exec(f"{prefix}-gone", ["true"])
    cid = f"{prefix}-created"
    image = await image_store.pull(busybox_ref)
    await runtime.create(ContainerConfig(id=cid, image=busybox_ref, command=["true"]), image)
    with pytest.raises(ContainerError, match=r"is not running \(state: created\)"):
        await runtime.exec(cid, ["true"])
    await runtime.start(cid)
    async with asyncio.timeout(30):
        await runtime.wait(cid)
    with pytest.raises(ContainerError, match=rf"container {cid} is not running \(state: stopped\)"):
        await runtime.exec(cid, ["true"])


async def test_kill_leaves_nothing_running_in_the_container(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    """A command that ignores SIGTERM and left a child in the background: kill() ends both
    (runc alone would leave them running in the container)."""
    cid = f"{prefix}-kill"
    await running(runtime, image_store, busybox_ref, cid)
    script = "trap '' TERM; sleep 1001 & echo started; sleep 1002"
    proc = await runtime.exec(cid, ["sh", "-c", script])
    async with asyncio.timeout(30):
        assert await proc.stdout.readline() == b"started\n"
    assert any("sleep 1001" in p for p in processes_in(runtime, cid))
    # runc writes the command's pid file just after starting it: the command may have
    # printed already.
    await eventually(lambda: proc.pid, 5, "runc's pid file", interval=0.01)
    began = time.monotonic()
    proc.kill()
    proc.kill()  # twice is fine
    async with asyncio.timeout(10):
        assert await proc.wait() == 137
    assert time.monotonic() - began < 5
    assert not [p for p in processes_in(runtime, cid) if "sleep 100" in p]
    proc.kill()  # and after the end


async def test_kill_while_runc_is_still_starting_the_command(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    """Killed at once, before runc wrote the command's pid: nothing may start afterwards."""
    cid = f"{prefix}-early"
    await running(runtime, image_store, busybox_ref, cid)
    for delay in (0, 0.005, 0.01, 0.02, 0.03, 0.05):
        proc = await runtime.exec(cid, ["sleep", "1003"])
        await asyncio.sleep(delay)  # the moment of the kill is the point of this test
        proc.kill()
        async with asyncio.timeout(10):
            assert await proc.wait() == 137
    # Nothing may start afterwards: watched for a while, not checked once.
    await always(
        lambda: not any("sleep 1003" in p for p in processes_in(runtime, cid)),
        1.0,
        "no sleep 1003 in the container",
        interval=0.02,
    )


async def test_an_exec_call_cancelled_while_runc_starts_leaves_nothing(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-cancel"
    await running(runtime, image_store, busybox_ref, cid)
    for turns in range(4):
        job = asyncio.create_task(runtime.exec(cid, ["sleep", "1005"]))
        for _ in range(turns):
            await asyncio.sleep(0)  # let the spawn get a little further each time
        job.cancel()
        try:
            finished = await job
        except asyncio.CancelledError:
            continue
        finished.kill()  # it was done before the cancel landed: an ordinary kill
        async with asyncio.timeout(10):
            await finished.wait()
    await always(
        lambda: not [p for p in processes_in(runtime, cid) if "sleep 1005" in p],
        1.0,
        "no sleep 1005 in the container",
        interval=0.02,
    )
    assert not list(runtime.container_dir(cid).glob("exec-*"))


async def test_the_container_stopping_ends_its_execs(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-stop"
    await running(runtime, image_store, busybox_ref, cid)
    proc = await runtime.exec(cid, ["sh", "-c", "echo up; exec sleep 1004"])
    async with asyncio.timeout(30):
        assert await proc.stdout.readline() == b"up\n"
        await runtime.stop(cid, grace=5)
        assert await proc.wait() == 137  # the pid namespace went with its init


def test_process_spec_keeps_the_container_process_but_argv_and_env() -> None:
    config = {
        "process": {
            "terminal": True,
            "consoleSize": {"height": 1, "width": 1},
            "user": {"uid": 33, "gid": 33},
            "cwd": "/srv",
            "args": ["httpd"],
            "env": ["PATH=/bin", "A=1", "B=2"],
            "capabilities": {"bounding": ["CAP_KILL"]},
        }
    }
    spec = process_spec(config, ["sh", "-c", "true"], ["B=3", "C=4"])
    assert spec["args"] == ["sh", "-c", "true"]
    assert spec["env"] == ["PATH=/bin", "A=1", "B=3", "C=4"]
    assert spec["terminal"] is False and "consoleSize" not in spec
    assert (spec["user"], spec["cwd"], spec["capabilities"]) == (
        {"uid": 33, "gid": 33},
        "/srv",
        {"bounding": ["CAP_KILL"]},
    )
    assert config["process"]["args"] == ["httpd"]  # the container's own is untouched
