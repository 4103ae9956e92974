"""Containers on the real thing: runc over an overlayfs rootfs, the shim, cgroups, a netns.
Each test's runtime fixture removes every container, mount and cgroup it made."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_helpers import cleanup_runtime, needs, output, run_to_end, runtime_settings
from tests_support import always

from orch.errors import ContainerError, NotFoundError
from orch.runtime import cgroups
from orch.runtime.containers import ContainerRuntime, wait_pid_exit
from orch.runtime.images import ImageStore
from orch.runtime.model import BindMount, ContainerConfig, Limits
from orch.runtime.rootfs import is_mounted, mounts_under

pytestmark = pytest.mark.integration

CRI_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] .*$")


async def wait_for_line(rt: ContainerRuntime, cid: str, text: bytes) -> None:
    async with asyncio.timeout(30):
        async for line in rt.read_logs(cid, follow=True):
            if line.line == text:
                return
    pytest.fail(f"{cid} ended without printing {text!r}")


async def test_exit_code_and_cri_log(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-exit3"
    script = "echo out1; echo err1 >&2; echo out2; printf 'no newline'; exit 3"
    status = await run_to_end(runtime, image_store, busybox_ref, cid, "sh", "-c", script)
    assert (status.exit_code, status.signal, status.oom_killed, status.error) == (
        3,
        None,
        False,
        None,
    )
    assert abs(status.finished_at.timestamp() - time.time()) < 60
    raw = runtime.log_path(cid).read_bytes().splitlines()
    assert len(raw) == 4 and all(CRI_LINE.match(r) for r in raw), raw
    assert await output(runtime, cid) == [b"out1", b"out2", b"no newline"]
    assert await output(runtime, cid, "stderr") == [b"err1"]
    assert [x.line async for x in runtime.read_logs(cid, tail=1) if x.stream == "stdout"] in (
        [b"no newline"],
        [],
    )
    assert await runtime.wait(cid) == status  # any number of times
    (record,) = runtime.list()
    assert (record.id, record.status, record.exit, record.pid) == (cid, "exited", status, None)
    with pytest.raises(ContainerError, match="already ran"):
        await runtime.start(cid)


async def test_long_lines_become_partial_records(
    tmp_path: Path, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    needs("runc")
    rt = ContainerRuntime(runtime_settings(tmp_path / "rt", prefix, log_line_max=64))
    try:
        cid = f"{prefix}-long"
        script = "head -c 200 /dev/zero | tr '\\0' a; echo; echo short"
        assert (
            await run_to_end(rt, image_store, busybox_ref, cid, "sh", "-c", script)
        ).exit_code == 0
        tags = [r.split(b" ")[2] for r in rt.log_path(cid).read_bytes().splitlines()]
        assert tags == [b"P", b"P", b"P", b"F", b"F"]
        assert await output(rt, cid) == [b"a" * 200, b"short"]
    finally:
        await cleanup_runtime(rt)


async def test_config_reaches_the_process(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-cfg"
    script = 'echo "$(hostname) $(id -u):$(id -g) $FOO $(pwd) $HOME"; ls /sys/fs/cgroup >/dev/null'
    status = await run_to_end(
        runtime, image_store, busybox_ref, cid, "sh", "-c", script,
        hostname="web-1", user="nobody", env=["FOO=bar"], workdir="/tmp",
    )  # fmt: skip
    assert status.exit_code == 0, await output(runtime, cid, "stderr")
    assert await output(runtime, cid) == [b"web-1 65534:65534 bar /tmp /nonexistent"]


async def test_stop_kills_after_the_grace_when_sigterm_is_ignored(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-stubborn"
    image = await image_store.pull(busybox_ref)
    script = "trap '' TERM; echo ready; sleep 1000"
    await runtime.create(
        ContainerConfig(id=cid, image=busybox_ref, command=["sh", "-c", script]), image
    )
    await runtime.start(cid)
    await wait_for_line(runtime, cid, b"ready")
    started = time.monotonic()
    await runtime.stop(cid, grace=1.0)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 8, elapsed
    status = await runtime.wait(cid)
    assert (status.exit_code, status.signal) == (137, "SIGKILL")
    await runtime.stop(cid, grace=1.0)  # twice, and on an ended container: a no-op
    assert await runtime.wait(cid) == status


async def test_stop_signal_ends_a_cooperative_container(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-polite"
    image = await image_store.pull(busybox_ref)
    script = "trap 'echo bye; exit 0' USR1; echo ready; while true; do sleep 0.05; done"
    config = ContainerConfig(
        id=cid, image=busybox_ref, command=["sh", "-c", script], stop_signal="USR1"
    )
    await runtime.create(config, image)
    await runtime.start(cid)
    await wait_for_line(runtime, cid, b"ready")
    await asyncio.gather(runtime.stop(cid, grace=30), runtime.stop(cid, grace=30))
    status = await runtime.wait(cid)
    assert (status.exit_code, status.signal) == (0, None)
    assert (await output(runtime, cid))[-1] == b"bye"


async def test_remove_leaves_nothing_but_the_log(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-rm"
    image = await image_store.pull(busybox_ref)
    config = ContainerConfig(
        id=cid, image=busybox_ref, command=["sh", "-c", "echo hi; exec sleep 1000"]
    )
    await runtime.create(config, image)
    await runtime.create(config, image)  # idempotent
    pid = await runtime.start(cid)
    assert await runtime.start(cid) == pid  # starting a running container: its pid
    await wait_for_line(runtime, cid, b"hi")
    cgroup = runtime.cgroups_path(cid)
    assert cgroups.cgroup_dirs(cgroup)
    rootfs = runtime.container_dir(cid) / "rootfs"
    assert is_mounted(rootfs)

    await runtime.remove(cid)  # while it runs
    assert not _in_container(pid, cid)
    assert not is_mounted(rootfs) and not mounts_under(runtime.settings.state_dir)
    assert await runtime.runc.state(cid) is None
    assert not cgroups.cgroup_dirs(cgroup)
    assert not runtime.container_dir(cid).exists()
    assert runtime.list() == []
    assert [x.line async for x in runtime.read_logs(cid)] == [b"hi"]  # the log is kept
    await runtime.remove(cid)  # idempotent
    await runtime.stop(cid)  # stop of a removed container: a no-op
    runtime.remove_logs(cid)
    assert not runtime.log_path(cid).exists()
    with pytest.raises(NotFoundError):
        await runtime.start(cid)


def _in_container(pid: int, cid: str) -> bool:
    """Whether ``pid`` is a live process of the container (not gone, not a reused pid)."""
    try:
        return cid in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


async def test_start_failure_gives_the_reason(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-bad"
    image = await image_store.pull(busybox_ref)
    await runtime.create(
        ContainerConfig(id=cid, image=busybox_ref, command=["/no/such/binary"]), image
    )
    with pytest.raises(ContainerError, match=r"start .*-bad: .*no such file or directory"):
        await runtime.start(cid)
    status = await runtime.wait(cid)
    assert status.exit_code == 255 and "no such file" in (status.error or "")
    assert runtime.list()[0].status == "exited"
    await runtime.remove(cid)
    assert not mounts_under(runtime.settings.state_dir)


ADOPT_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from orch.runtime.containers import ContainerRuntime, wait_pid_exit
from orch.runtime.images import ImageStore
from orch.runtime.model import ContainerConfig
from orch.runtime.settings import ImageSettings, RuntimeSettings

async def main(args):
    rt = ContainerRuntime(RuntimeSettings(
        state_dir=Path(args["state"]), runc_root=Path(args["runc"]), cgroup_parent=args["cg"]))
    store = ImageStore(Path(args["images"]), ImageSettings(oci_layout_dirs=(args["layouts"],)))
    image = await store.pull(args["ref"])
    await rt.create(ContainerConfig(id=args["id"], image=args["ref"],
                                    command=["sh", "-c", "echo started; exec sleep 1000"]), image)
    print(await rt.start(args["id"]))

asyncio.run(main(json.loads(sys.argv[1])))
"""


async def test_container_outlives_the_process_that_started_it(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-adopt"
    s = runtime.settings
    args = {
        "state": str(s.state_dir), "runc": str(s.runc_root), "cg": s.cgroup_parent,
        "images": str(image_store.root), "ref": busybox_ref, "id": cid,
        "layouts": image_store.settings.oci_layout_dirs[0],
    }  # fmt: skip
    starter = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ADOPT_SCRIPT, json.dumps(args), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(starter.communicate(), 60)
    assert starter.returncode == 0
    pid = int(out)
    assert starter.returncode is not None  # the starter is gone (exited and reaped)...
    assert _in_container(pid, cid)

    (record,) = runtime.list()  # ...and this process adopts what it left
    assert (record.id, record.status, record.pid) == (cid, "running", pid)
    assert record.config.command == ["sh", "-c", "echo started; exec sleep 1000"]
    assert (await runtime.runc.state(cid) or {}).get("status") == "running"
    shim = runtime.shim_pid(cid)
    assert shim is not None and shim != starter.pid
    await wait_for_line(runtime, cid, b"started")

    waiter = asyncio.create_task(runtime.wait(cid))
    # wait() does not return while the container runs: watched for a while, not once.
    await always(lambda: not waiter.done(), 0.5, "wait() pending", interval=0.01)
    await runtime.runc.kill(cid, "SIGKILL")
    status = await asyncio.wait_for(waiter, 30)
    assert (status.exit_code, status.signal) == (137, "SIGKILL")
    assert runtime.list()[0].status == "exited"


async def test_limits_land_in_the_cgroup(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-lim"
    image = await image_store.pull(busybox_ref)
    limits = Limits(nano_cpus=500_000_000, memory_bytes=64 << 20, pids=50)
    config = ContainerConfig(id=cid, image=busybox_ref, command=["sleep", "1000"], limits=limits)
    await runtime.create(config, image)
    await runtime.start(cid)
    path = runtime.cgroups_path(cid)
    mem = cgroups.memory_file(path, "memory.limit_in_bytes", "memory.max")
    assert mem is not None and int(mem.read_text()) == 64 << 20
    pids = next(d / "pids.max" for d in cgroups.cgroup_dirs(path) if (d / "pids.max").exists())
    assert pids.read_text().strip() == "50"
    # Half a CPU: a 50 ms quota per 100 ms period, in v1's cpu.cfs_quota_us or v2's cpu.max
    # (the test runs on either layout; a missing file is a failure, not a skip).
    dirs = cgroups.cgroup_dirs(path)
    v1 = [d / "cpu.cfs_quota_us" for d in dirs if (d / "cpu.cfs_quota_us").exists()]
    v2 = [d / "cpu.max" for d in dirs if (d / "cpu.max").exists()]
    if v1:
        assert v1[0].read_text().strip() == "50000"
        period = v1[0].with_name("cpu.cfs_period_us").read_text().strip()
        assert period == "100000"
    else:
        assert v2, f"no cpu.cfs_quota_us nor cpu.max under {dirs}"
        assert v2[0].read_text().split() == ["50000", "100000"]
    await runtime.stop(cid, grace=0)
    assert (await runtime.wait(cid)).exit_code == 137


async def test_oom_kill_is_reported(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-oom"
    status = await run_to_end(
        runtime, image_store, busybox_ref, cid,
        "dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1",
        limits=Limits(memory_bytes=16 << 20),
    )  # fmt: skip
    assert status.oom_killed, status
    assert status.exit_code == 137


@pytest.fixture
def netns(prefix: str) -> Iterator[str]:
    """A network namespace of this test (only loopback in it)."""
    needs("ip")
    name = f"{prefix}-ns"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def test_joins_a_netns_and_bind_mounts_files(
    runtime: ContainerRuntime,
    image_store: ImageStore,
    busybox_ref: str,
    prefix: str,
    tmp_path: Path,
    netns: str,
) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\n")
    script = "ip -o link | cut -d: -f2; cat /etc/resolv.conf; echo x >> /etc/resolv.conf || echo ro"
    status = await run_to_end(
        runtime, image_store, busybox_ref, f"{prefix}-net", "sh", "-c", script,
        netns_path=f"/run/netns/{netns}",
        mounts=[BindMount(str(resolv), "/etc/resolv.conf", readonly=True)],
    )  # fmt: skip
    assert status.exit_code == 0
    assert await output(runtime, f"{prefix}-net") == [b" lo", b"nameserver 127.0.0.53", b"ro"]
    assert resolv.read_text() == "nameserver 127.0.0.53\n"


async def test_follow_streams_until_the_container_ends(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-follow"
    image = await image_store.pull(busybox_ref)
    script = "for i in 1 2 3 4 5; do echo line$i; sleep 0.05; done; exit 0"
    await runtime.create(
        ContainerConfig(id=cid, image=busybox_ref, command=["sh", "-c", script]), image
    )
    follower = asyncio.create_task(_collect_follow(runtime, cid))
    await runtime.start(cid)
    async with asyncio.timeout(30):
        lines = await follower
    assert lines == [f"line{i}".encode() for i in range(1, 6)]


async def _collect_follow(rt: ContainerRuntime, cid: str) -> list[bytes]:
    return [line.line async for line in rt.read_logs(cid, tail=-1, follow=True)]


async def test_list_statuses_and_sweep(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    image = await image_store.pull(busybox_ref)
    run, made, debris = f"{prefix}-run", f"{prefix}-made", f"{prefix}-debris"
    for cid in (run, made, debris):
        await runtime.create(
            ContainerConfig(id=cid, image=busybox_ref, command=["sleep", "1000"]), image
        )
    await runtime.start(run)
    (runtime.container_dir(debris) / "container.json").unlink()  # a create that crashed
    assert {r.id: r.status for r in runtime.list()} == {run: "running", made: "created"}
    assert is_mounted(runtime.container_dir(debris) / "rootfs")
    # What the runtime holds anything of: the debris too (an agent cleans up by it).
    assert {i for i in await runtime.held_ids() if i.startswith(prefix)} == {run, made, debris}

    assert await runtime.sweep(prefix) == [debris]
    assert not runtime.container_dir(debris).exists()
    assert await runtime.sweep("orchnobody") == []
    assert {r.id for r in runtime.list()} == {run, made}
    assert sorted(await runtime.sweep(prefix, everything=True)) == [made, run]
    assert runtime.list() == [] and not mounts_under(runtime.settings.state_dir)


async def test_parallel_containers(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    async def one(i: int) -> int:
        cid = f"{prefix}-par{i}"
        status = await run_to_end(runtime, image_store, busybox_ref, cid, "sh", "-c", f"exit {i}")
        await runtime.remove(cid)
        return status.exit_code

    assert await asyncio.gather(*(one(i) for i in range(5))) == [0, 1, 2, 3, 4]


async def test_crun_runs_the_same_bundle(
    tmp_path: Path, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    needs("crun")
    rt = ContainerRuntime(runtime_settings(tmp_path / "crun", prefix, runtime_binary="crun"))
    try:
        try:
            status = await run_to_end(
                rt, image_store, busybox_ref, f"{prefix}-crun", "sh", "-c", "exit 5"
            )
        except ContainerError as exc:
            if "hybrid mode not supported" in str(exc):
                pytest.skip(f"crun cannot run on this host's cgroup layout: {exc}")
            raise
        assert status.exit_code == 5
    finally:
        await cleanup_runtime(rt)


def test_invalid_ids_are_refused(tmp_path: Path, prefix: str) -> None:
    needs()
    rt = ContainerRuntime(runtime_settings(tmp_path, prefix))
    for bad in ("../x", "", "a/b", "-x", "x" * 200):
        with pytest.raises(ContainerError, match="invalid container id"):
            rt.container_dir(bad)
    shutil.rmtree(tmp_path / "runc")


async def test_a_dead_shim_is_reported_not_hidden(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    """If the shim is killed, the container runs on; wait() follows the container itself
    and then reports an unknown status with the reason, the same for every reader."""
    cid = f"{prefix}-noshim"
    image = await image_store.pull(busybox_ref)
    await runtime.create(
        ContainerConfig(id=cid, image=busybox_ref, command=["sleep", "1000"]), image
    )
    pid = await runtime.start(cid)
    shim = runtime.shim_pid(cid)
    assert shim is not None
    os.kill(shim, signal.SIGKILL)
    await asyncio.wait_for(wait_pid_exit(shim), 10)
    assert runtime.shim_pid(cid) is None
    assert runtime.list()[0].status == "running"
    waiter = asyncio.create_task(runtime.wait(cid))
    await always(lambda: not waiter.done(), 0.5, "wait() pending", interval=0.01)
    os.kill(pid, signal.SIGKILL)
    status = await asyncio.wait_for(waiter, 30)
    assert status.exit_code == 255 and "shim exited" in (status.error or "")
    assert runtime.list()[0].exit == status
