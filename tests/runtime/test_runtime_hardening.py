"""The container defaults and the image rules of issue 12, driven from outside on the real
thing: what a process inside a default container can do (seccomp, capabilities,
noNewPrivileges, masked /proc entries, the pids limit, its OOM score), and what an image
cannot do to the agent (a FIFO where /etc/passwd should be, device nodes, setuid files,
foreign xattrs, same-layer whiteouts, OCI layouts outside the allowed dirs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_helpers import (
    build_layout,
    cleanup_runtime,
    entry,
    needs,
    output,
    run,
    run_to_end,
    running,
    runtime_settings,
    tar_layer,
)
from tests_support import wait_until

from orch.errors import ImageError
from orch.runtime import cgroups
from orch.runtime.containers import ContainerRuntime
from orch.runtime.images import ImageStore
from orch.runtime.layers import extract_layer
from orch.runtime.model import ContainerConfig
from orch.runtime.rootfs import mount_overlay, safe_read, unmount
from orch.runtime.settings import ImageSettings
from orch.runtime.spec import DEFAULT_CAPABILITIES, DEFAULT_PIDS_LIMIT

pytestmark = pytest.mark.integration

# Capability numbers (linux/capability.h), for the CapEff mask a container must show.
CAP_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}  # fmt: skip

PROBE = """
grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status | tr -d '\\t'
unshare -r true 2>/tmp/err; echo "unshare-user=$? $(cat /tmp/err)"
mount -t tmpfs none /mnt 2>/tmp/err; echo "mount=$? $(cat /tmp/err)"
mknod /tmp/disk b 8 0 2>/tmp/err; echo "mknod=$? $(cat /tmp/err)"
echo "interrupts=$(wc -c < /proc/interrupts)"
echo "oom=$(cat /proc/self/oom_score_adj)"
echo "pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)"
"""


def _fields(lines: list[bytes]) -> dict[str, str]:
    pairs = (line.decode().replace(":", "=", 1).partition("=") for line in lines)
    return {key: value for key, _, value in pairs}


@contextlib.contextmanager
def oom_score_adj(value: int) -> Iterator[None]:
    """This process's oom_score_adj for a while (raising it needs no privilege; going back
    down to 0 neither, as 0 is the floor an unprivileged process may return to)."""
    path = Path("/proc/self/oom_score_adj")
    before = path.read_text().strip()
    path.write_text(str(value))
    try:
        yield
    finally:
        path.write_text(before)


async def test_a_default_container_is_confined(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-confined"
    # The agent protects itself from the OOM killer; its containers must not inherit that.
    # (Lowering needs CAP_SYS_RESOURCE, which this host may lack: raising shows the same.)
    with oom_score_adj(500):
        status = await run_to_end(runtime, image_store, busybox_ref, cid, "sh", "-c", PROBE)
    assert status.exit_code == 0, await output(runtime, cid, "stderr")
    got = _fields(await output(runtime, cid))
    mask = sum(1 << CAP_NUMBERS[c] for c in DEFAULT_CAPABILITIES)
    assert (got["Seccomp"], got["NoNewPrivs"]) == ("2", "1")
    assert int(got["CapEff"], 16) == int(got["CapBnd"], 16) == mask
    assert not mask & (1 << CAP_NUMBERS["CAP_MKNOD"])
    # unshare(CLONE_NEWUSER) needs no capability: only seccomp can refuse it
    assert got["unshare-user"].startswith("1 ") and "Operation not permitted" in got["unshare-user"]
    assert got["mount"].startswith("255 ") or got["mount"].startswith("1 "), got["mount"]
    assert "permission denied" in got["mount"]  # busybox's words for EPERM
    assert got["mknod"].startswith("1 ") and "Operation not permitted" in got["mknod"]
    assert got["interrupts"] == "0"  # masked: /dev/null bound over it
    assert got["oom"] == "0"
    assert got["pids"] == str(DEFAULT_PIDS_LIMIT)


async def test_exec_is_as_confined_as_the_container(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    """Health probes and `orch exec` run through `runc exec`, a child of the agent."""
    cid = f"{prefix}-execd"
    await running(runtime, image_store, busybox_ref, cid)
    with oom_score_adj(500):
        rc, out, err = await run(await runtime.exec(cid, ["sh", "-c", PROBE]))
    assert rc == 0, err
    got = _fields(out.splitlines())
    assert (got["Seccomp"], got["NoNewPrivs"], got["oom"]) == ("2", "1", "0")
    assert "Operation not permitted" in got["unshare-user"]
    devices = cgroups.devices_v1_dir(runtime.cgroups_path(cid))
    if devices is not None:  # runc's "c *:* m" and "b *:* m" were taken out again
        rules = (devices / "devices.list").read_text().splitlines()
        assert "c 1:3 rwm" in rules and not [r for r in rules if r.endswith("*:* m")]


async def test_the_default_pids_limit_stops_a_fork_bomb(
    tmp_path: Path, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    """Processes that never end, forked as fast as the shell can: the 40th (the shell is
    the first) fails, and the shell gives up as a non-interactive shell does."""
    needs("runc")
    rt = ContainerRuntime(runtime_settings(tmp_path / "rt", prefix, default_pids_limit=40))
    cid = f"{prefix}-forkbomb"
    try:
        bomb = "i=0; while :; do sleep 1000 & i=$((i+1)); echo $i; done"
        status = await run_to_end(rt, image_store, busybox_ref, cid, "sh", "-c", bomb)
        assert status.exit_code == 2
        assert (await output(rt, cid))[-1] == b"39"
        assert await output(rt, cid, "stderr") == [
            b"sh: can't fork: Resource temporarily unavailable"
        ]
        host = await asyncio.create_subprocess_exec("true")
        assert await host.wait() == 0  # and the host forks as ever
    finally:
        await cleanup_runtime(rt)


async def test_a_fifo_at_etc_passwd_does_not_block_the_agent(
    runtime: ContainerRuntime, image_store: ImageStore, layout_dir: Path, prefix: str
) -> None:
    needs("mount")
    layer = tar_layer([entry("etc/", tarfile.DIRTYPE, 0o755),
                       entry("etc/passwd", tarfile.FIFOTYPE, 0o644),
                       entry("etc/group", tarfile.FIFOTYPE, 0o644)])  # fmt: skip
    ref = build_layout(layout_dir, [layer], tag="fifo", cmd="/nothing")
    image = await image_store.pull(ref)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    beat = asyncio.create_task(ticker())
    try:
        async with asyncio.timeout(20):
            await runtime.create(ContainerConfig(id=f"{prefix}-fifo", image=ref), image)
    finally:
        beat.cancel()
    assert ticks > 0  # the event loop kept running meanwhile
    assert runtime.get(f"{prefix}-fifo") is not None  # created, as root (no passwd entry)


def test_safe_read_reads_only_regular_files(tmp_path: Path) -> None:
    needs()
    etc = tmp_path / "root" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    assert safe_read(tmp_path / "root", "etc/passwd").startswith("root:x:0:0:")
    os.mknod(etc / "group", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero: never ends
    assert safe_read(tmp_path / "root", "etc/group") == ""
    os.mkfifo(etc / "shadow")
    assert safe_read(tmp_path / "root", "etc/shadow") == ""
    (tmp_path / "root" / "link").symlink_to("/etc")  # a link on the way is not followed
    assert safe_read(tmp_path / "root", "link/passwd") == ""
    assert safe_read(tmp_path / "root", "etc/missing") == ""


def test_a_layer_loses_devices_setuid_bits_and_foreign_xattrs(tmp_path: Path) -> None:
    needs()
    layer = tmp_path / "layer.tar"
    layer.write_bytes(
        tar_layer(
            [
                entry("dev/", tarfile.DIRTYPE, 0o755),
                entry("dev/sda", tarfile.BLKTYPE, 0o666, devmajor=8, devminor=0),
                entry("dev/mem", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=1),
                entry("dev/kmem", tarfile.LNKTYPE, linkname="dev/mem"),
                (entry("bin/su", mode=0o4755), b"#!/bin/sh\n"),
                (entry("bin/wall", mode=0o2755), b"#!/bin/sh\n"),
                entry("shared/", tarfile.DIRTYPE, 0o2775),
                (entry("data", pax_headers={"SCHILY.xattr.user.note": "kept",
                                            "SCHILY.xattr.trusted.overlay.redirect": "/etc",
                                            "SCHILY.xattr.security.capability": "x"}), b"d"),
            ]
        )
    )  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    extract_layer(layer, out)
    assert sorted(os.listdir(out / "dev")) == []
    assert stat.S_IMODE(os.lstat(out / "bin" / "su").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(out / "bin" / "wall").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(out / "shared").st_mode) == 0o2775  # setgid dir: no privilege
    assert os.listxattr(out / "data") == ["user.note"]
    assert os.getxattr(out / "data", "user.note") == b"kept"


async def test_a_whiteout_spares_its_own_layer(
    image_store: ImageStore, layout_dir: Path, tmp_path: Path
) -> None:
    """OCI image spec: a whiteout applies to lower layers only. x and d/new of the top
    layer survive their whiteouts (before or after them); the lower ones are hidden."""
    needs("mount")
    lower = tar_layer([(entry("x"), b"lower\n"), (entry("y"), b"lower\n"), (entry("z"), b"z\n"),
                       entry("d/", tarfile.DIRTYPE, 0o755), (entry("d/old"), b"old\n"),
                       entry("e/", tarfile.DIRTYPE, 0o755), (entry("e/old"), b"old\n")])  # fmt: skip
    upper = tar_layer([(entry("x"), b"mine\n"), entry(".wh.x"),  # whiteout after the file
                       entry(".wh.y"), (entry("y"), b"mine\n"),  # ... and before it
                       entry(".wh.z"),
                       entry("d/", tarfile.DIRTYPE, 0o755), (entry("d/new"), b"new\n"), entry(".wh.d"),
                       entry(".wh.e"), entry("e/", tarfile.DIRTYPE, 0o755), (entry("e/new"), b"new\n")])  # fmt: skip
    image = await image_store.pull(build_layout(layout_dir, [lower, upper], tag="same"))
    target = tmp_path / "ctr" / "rootfs"
    await mount_overlay(image.layers, tmp_path / "ctr" / "upper", tmp_path / "ctr" / "work", target)
    try:
        assert (target / "x").read_text() == "mine\n"
        assert (target / "y").read_text() == "mine\n"
        assert not (target / "z").exists()
        assert os.listdir(target / "d") == ["new"]
        assert os.listdir(target / "e") == ["new"]
    finally:
        await unmount(target)


async def test_oci_layouts_only_from_the_allowed_dirs(
    tmp_path: Path, image_dir: Path, busybox_ref: str
) -> None:
    needs("skopeo")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    store = ImageStore(tmp_path / "images", ImageSettings(oci_layout_dirs=(str(allowed),)))
    (allowed / "escape").symlink_to(image_dir)
    for ref in (busybox_ref, f"oci:{allowed}/../{image_dir.name}/busybox:latest",
                f"oci:{allowed}/escape/busybox:latest"):  # fmt: skip
        with pytest.raises(ImageError) as err:
            await store.pull(ref)
        assert str(err.value) == f"pull {ref}: OCI layouts are only read from {allowed}"
    assert not list(store.refs.iterdir())  # a refusal changes nothing
    shutil.copytree(image_dir / "busybox", allowed / "busybox")
    image = await store.pull(f"oci:{allowed}/busybox:latest")
    assert image.config["Cmd"] == ["sh"]


async def test_an_invalid_stop_signal_still_stops_gracefully(
    runtime: ContainerRuntime,
    image_store: ImageStore,
    busybox_ref: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cid = f"{prefix}-badsig"
    image = await image_store.pull(busybox_ref)
    script = "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"
    config = ContainerConfig(id=cid, image=busybox_ref, command=["sh", "-c", script],
                             stop_signal="SIGNOPE")  # fmt: skip
    with caplog.at_level(logging.WARNING):
        await runtime.create(config, image)
        await runtime.start(cid)
        wait_until(lambda: runtime.log_path(cid).exists() and b"ready" in runtime.log_path(cid).read_bytes(),
                   10, what="the container to trap TERM")  # fmt: skip
        await runtime.stop(cid, signal="SIGNOPE", grace=10)
    status = await runtime.wait(cid)
    assert (status.exit_code, status.signal) == (7, None)  # TERM, trapped: not SIGKILL
    assert "unknown stop signal 'SIGNOPE', using SIGTERM" in caplog.text


async def test_state_is_private(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-private"
    image = await image_store.pull(busybox_ref)
    config = ContainerConfig(id=cid, image=busybox_ref, command=["true"], env=["TOKEN=secret"])
    await runtime.create(config, image)
    s = runtime.settings
    for d in (s.state_dir, s.containers_dir, s.logs_dir, s.runc_root, runtime.container_dir(cid),
              image_store.root, image_store.layers):  # fmt: skip
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in ("config.json", "container.json"):
        assert stat.S_IMODE((runtime.container_dir(cid) / f).stat().st_mode) == 0o600, f


def test_the_agent_protects_itself_from_the_oom_killer() -> None:
    """In a process of its own (pytest's score stays as it is). Lowering the score needs
    CAP_SYS_RESOURCE: where the host withholds it the agent says so and runs on."""
    needs()
    code = "from orch.agent.main import protect_from_oom; print(protect_from_oom())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    status = Path("/proc/self/status").read_text()
    cap_eff = int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)
    if cap_eff & (1 << 24):  # CAP_SYS_RESOURCE
        assert done.stdout.strip() == "-999"
    else:
        assert done.stdout.strip() == Path("/proc/self/oom_score_adj").read_text().strip()
        assert "cannot set the agent's oom_score_adj to -999" in done.stderr
