"""Helpers for the runtime tests: skip conditions, settings for a private runtime, the
leftover check, running a container to its end, and building layer tars / OCI layouts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from orch.runtime import cgroups
from orch.runtime.containers import ContainerRuntime
from orch.runtime.exec import ExecProcess
from orch.runtime.images import ImageStore
from orch.runtime.model import ContainerConfig, ExitStatus
from orch.runtime.rootfs import mounts_under
from orch.runtime.settings import RuntimeSettings


async def run_to_end(
    rt: ContainerRuntime, store: ImageStore, ref: str, cid: str, *command: str, **kw: object
) -> ExitStatus:
    """Create and start a container running ``command``; its exit status once it ended."""
    image = await store.pull(ref)
    await rt.create(ContainerConfig(id=cid, image=ref, command=list(command), **kw), image)  # type: ignore[arg-type]
    await rt.start(cid)
    async with asyncio.timeout(60):
        return await rt.wait(cid)


async def output(rt: ContainerRuntime, cid: str, stream: str = "stdout") -> list[bytes]:
    """The lines a container wrote to ``stream``."""
    return [line.line async for line in rt.read_logs(cid) if line.stream == stream]


async def running(rt: ContainerRuntime, store: ImageStore, ref: str, cid: str, **kw: object) -> int:
    """A started container whose init sleeps; returns its host pid."""
    image = await store.pull(ref)
    command = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    await rt.create(ContainerConfig(id=cid, image=ref, command=command, **kw), image)  # type: ignore[arg-type]
    return await rt.start(cid)


async def run(proc: ExecProcess, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    async with asyncio.timeout(30):
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            await proc.stdin.drain()
            proc.stdin.close()
        out, err = await asyncio.gather(proc.stdout.read(), proc.stderr.read())
        return await proc.wait(), out, err


def needs(*binaries: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    missing = [b for b in binaries if not shutil.which(b)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")


def runtime_settings(tmp_path: Path, prefix: str, **overrides: object) -> RuntimeSettings:
    values: dict = dict(
        state_dir=tmp_path / "state",
        runc_root=tmp_path / "runc",
        cgroup_parent=f"{prefix}-cg",
        stop_grace=5.0,
        kill_timeout=10.0,
        start_timeout=30.0,
    )
    values.update(overrides)
    return RuntimeSettings(**values)


async def cleanup_runtime(rt: ContainerRuntime) -> None:
    await rt.sweep(everything=True)
    await rt.close()
    parent = f"/{rt.settings.cgroup_parent}"
    leftovers = [
        *map(str, mounts_under(rt.settings.state_dir)),
        *map(str, cgroups.cgroup_dirs(parent)),
        *[c["id"] for c in await rt.runc.list()],
    ]
    for d in cgroups.cgroup_dirs(parent):  # do not leak even if the check fails
        _rmdir_tree(d)
    assert not leftovers, f"runtime left state behind: {leftovers}"


def _rmdir_tree(top: Path) -> None:
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def tar_layer(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """An uncompressed layer tar from TarInfo entries (with data for regular files)."""
    buf = BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            if info.isreg():
                info.size = len(data)
                tf.addfile(info, BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **kw: object
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 1_700_000_000
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def build_layout(path: Path, layers: list[bytes], tag: str = "latest", cmd: str = "sh") -> str:
    """An OCI layout at ``path`` whose image stacks ``layers`` (umoci raw add-layer)."""
    if not path.exists():
        subprocess.run(["umoci", "init", "--layout", str(path)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{path}:{tag}"], check=True)
    for i, layer in enumerate(layers):
        f = path.parent / f".{path.name}-{tag}-layer{i}.tar"
        f.write_bytes(layer)
        subprocess.run(
            ["umoci", "raw", "add-layer", "--image", f"{path}:{tag}", str(f)],
            check=True,
            capture_output=True,
        )
        f.unlink()
    subprocess.run(
        ["umoci", "config", "--image", f"{path}:{tag}", "--config.cmd", cmd],
        check=True,
        capture_output=True,
    )
    return f"oci:{path}:{tag}"
