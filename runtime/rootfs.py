"""Mount and unmount a container's overlayfs rootfs over unpacked image layers.

We call the util-linux ``mount``/``umount`` binaries as asyncio subprocesses rather than
mount(2) through ctypes: they do not block the event loop, and ``mount`` can be given a
working directory. That matters because the whole option string must fit in one page
(4096 bytes); when every layer lives in one directory (the image store's layers/) we pass
lowerdir as paths relative to it, which keeps ~50 layers within the limit. overlayfs
resolves the paths at mount time, so the relative form is as good as the absolute one.

Mount state is read from /proc/self/mountinfo, which is cheap and never blocks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from orch.errors import ContainerError
from orch.runtime.util import error_line, run

MOUNT_TIMEOUT = 30.0
_MAX_OPTIONS = 4000


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> list[Path]:
    """Every mount point of this mount namespace, in mount order."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                points.append(Path(_unescape(fields[4])))
    return points


def is_mounted(target: Path) -> bool:
    return Path(target) in set(mount_points())


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below ``prefix``, deepest (latest) first, for unmounting."""
    prefix = Path(prefix)
    found = [p for p in mount_points() if p == prefix or p.is_relative_to(prefix)]
    return list(reversed(found))


def overlay_options(layers: Sequence[Path], upper: Path, work: Path) -> tuple[str, str | None]:
    """The overlay mount options and the cwd to run mount in (None: paths are absolute).
    ``layers`` are bottom to top; overlayfs wants lowerdir top first."""
    lowers = [Path(p) for p in reversed(layers)]
    parents = {p.parent for p in lowers}
    cwd: str | None = None
    if len(parents) == 1:
        cwd = str(parents.pop())
        lower = ":".join(p.name for p in lowers)
    else:
        lower = ":".join(str(p) for p in lowers)
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if any(c in str(p) for p in [*lowers, upper, work] for c in ",:"):
        raise ContainerError(f"overlay paths must not contain ',' or ':' ({opts})")
    if len(opts) > _MAX_OPTIONS:
        raise ContainerError(f"overlay mount options too long ({len(lowers)} layers)")
    return opts, cwd


async def mount_overlay(layers: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount an overlayfs at ``target``; a no-op when something is already mounted there.
    An image without layers gets an empty lower directory."""
    if is_mounted(target):
        return
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    if not layers:
        empty = upper.parent / "empty-lower"
        empty.mkdir(exist_ok=True)
        layers = [empty]
    opts, cwd = overlay_options(layers, upper, work)
    argv = ["mount", "-t", "overlay", "overlay", "-o", opts, str(target)]
    done = await run(argv, time_limit=MOUNT_TIMEOUT, cwd=cwd)
    if done.returncode != 0:
        raise ContainerError(f"mount rootfs {target}: {error_line(done.stderr)}")


async def unmount(target: Path) -> None:
    """Unmount ``target`` (and anything below it); lazily detach what is busy. Idempotent."""
    for point in mounts_under(target):
        done = await run(["umount", str(point)], time_limit=MOUNT_TIMEOUT)
        if done.returncode != 0 and is_mounted(point):
            lazy = await run(["umount", "-l", str(point)], time_limit=MOUNT_TIMEOUT)
            if lazy.returncode != 0 and is_mounted(point):
                raise ContainerError(f"unmount {point}: {error_line(lazy.stderr)}")


def safe_read(root: Path, relpath: str) -> str:
    """Read a small text file inside a rootfs without following symlinks out of it
    (an image could make /etc/passwd a link to a host file). "" when absent or unsafe."""
    path = root
    for part in relpath.strip("/").split("/"):
        path = path / part
        if path.is_symlink():
            return ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20).decode(errors="replace")
