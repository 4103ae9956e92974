"""Mount and unmount a container's overlayfs rootfs over unpacked image layers.

mount(2) and umount2(2) are called through ctypes in a worker thread (so the event loop
never blocks): a `mount`/`umount` binary per container costs a fork, an exec and libmount
reading the whole mount table, which adds up when a node starts or stops twenty
containers at once. The whole option string must fit in one page (4096 bytes), though;
when absolute lowerdir paths do not fit and every layer lives in one directory (the image
store's layers/), the util-linux ``mount`` binary runs in that directory with relative
paths, which keeps ~50 layers within the limit (a thread cannot chdir on its own).
overlayfs resolves the paths at mount time, so the relative form is as good.

Mount state is read from /proc/self/mountinfo, which is cheap and never blocks.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from orch.errors import ContainerError
from orch.runtime.util import error_line, run

MOUNT_TIMEOUT = 30.0
_MAX_OPTIONS = 4000
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


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


def _mount_paths() -> list[str]:
    """Every mount point of this mount namespace as text, in mount order. (Strings, not
    Paths: a node has hundreds of mounts and this runs on every create and remove.)"""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ", 5)
            if len(fields) > 4:
                point = fields[4]
                points.append(_unescape(point) if "\\" in point else point)
    return points


def is_mounted(target: Path) -> bool:
    return str(Path(target)) in _mount_paths()


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below ``prefix``, deepest (latest) first, for unmounting."""
    top = str(Path(prefix))
    below = top.rstrip("/") + "/"
    found = [p for p in _mount_paths() if p == top or p.startswith(below)]
    return [Path(p) for p in reversed(found)]


def overlay_options(layers: Sequence[Path], upper: Path, work: Path) -> tuple[str, str | None]:
    """The overlay mount options and the cwd to run `mount` in; None (absolute paths, which
    mount(2) takes directly) whenever they fit. ``layers`` are bottom to top; overlayfs
    wants lowerdir top first."""
    lowers = [Path(p) for p in reversed(layers)]
    tail = f",upperdir={upper},workdir={work}"
    opts = "lowerdir=" + ":".join(str(p) for p in lowers) + tail
    if any(c in str(p) for p in [*lowers, upper, work] for c in ",:"):
        raise ContainerError(f"overlay paths must not contain ',' or ':' ({opts})")
    if len(opts) <= _MAX_OPTIONS:
        return opts, None
    parents = {p.parent for p in lowers}
    if len(parents) == 1:
        opts = "lowerdir=" + ":".join(p.name for p in lowers) + tail
        if len(opts) <= _MAX_OPTIONS:
            return opts, str(parents.pop())
    raise ContainerError(f"overlay mount options too long ({len(lowers)} layers)")


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
    if cwd is None:
        err = await asyncio.to_thread(_mount, opts, str(target))
        if err:
            raise ContainerError(f"mount rootfs {target}: {os.strerror(err)} (options {opts})")
        return
    argv = ["mount", "-t", "overlay", "overlay", "-o", opts, str(target)]
    done = await run(argv, time_limit=MOUNT_TIMEOUT, cwd=cwd)
    if done.returncode != 0:
        raise ContainerError(f"mount rootfs {target}: {error_line(done.stderr)}")


def _mount(opts: str, target: str) -> int:
    """mount(2) an overlay; 0 or the errno."""
    ok = _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, opts.encode()) == 0
    return 0 if ok else ctypes.get_errno()


def _umount(target: str, flags: int) -> int:
    """umount2(2); 0 or the errno."""
    return 0 if _libc.umount2(os.fsencode(target), flags) == 0 else ctypes.get_errno()


async def unmount(target: Path) -> None:
    """Unmount ``target`` (and anything below it); lazily detach what is busy. Idempotent."""
    for point in mounts_under(target):
        err = await asyncio.to_thread(_umount, str(point), 0)
        if err and is_mounted(point):
            err = await asyncio.to_thread(_umount, str(point), MNT_DETACH)
            if err and is_mounted(point):
                raise ContainerError(f"unmount {point}: {os.strerror(err)}")


_READ_MAX = 1 << 20


def safe_read(root: Path, relpath: str) -> str:
    """Read a small text file of an image inside ``root``; "" when absent or unsafe.

    The image decides what is at that path, so: no symlink is followed anywhere on the
    way (each directory is opened with O_NOFOLLOW relative to the previous one; /etc/passwd
    could link to a host file), and only a regular file is read. A FIFO would block the
    reader forever and a device node would be opened as root on the host: the entry is
    checked with lstat before the open, and the open itself is O_NONBLOCK (a FIFO swapped
    in meanwhile opens at once and fails the fstat check). Blocking: call it in a thread."""
    *dirs, name = relpath.strip("/").split("/")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        dir_fd = os.open(root, flags | os.O_DIRECTORY)
    except OSError:
        return ""
    try:
        for part in dirs:
            next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return ""
        fd = os.open(name, flags | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd)
    except OSError:
        return ""
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return f.read(_READ_MAX).decode(errors="replace")
