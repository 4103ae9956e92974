"""Where a container's cgroup lives on this host, for cleanup and for tests that check
limits. runc creates and configures the cgroups itself (from config.json); this module
only finds the directories on cgroup v1, hybrid and v2 (unified) hosts and removes the
empty ones that a crashed run left behind.
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

from orch.errors import ContainerError

CGROUP_ROOT = Path("/sys/fs/cgroup")


def is_unified() -> bool:
    """True on a pure cgroup v2 host (the unified hierarchy is mounted at the root)."""
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def hierarchies() -> list[Path]:
    """The mount point of every hierarchy (v1 controllers, named ones, the v2 unified one).
    Found once per process: hierarchies are mounted at boot, and finding them costs more
    than the cleanup of a container's cgroups that uses them."""
    return list(_hierarchies(CGROUP_ROOT))


@functools.cache
def _hierarchies(root: Path) -> tuple[Path, ...]:
    if (root / "cgroup.controllers").exists():
        return (root,)
    seen: dict[Path, None] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return ()
    for entry in entries:
        if entry.is_dir():  # "cpu -> cpu,cpuacct" style symlinks resolve to one hierarchy
            seen.setdefault(entry.resolve(), None)
    return tuple(seen)


def cgroup_dirs(cgroup_path: str) -> list[Path]:
    """The directories of ``cgroup_path`` ("/parent/id") that exist, one per hierarchy."""
    rel = cgroup_path.strip("/")
    return [h / rel for h in hierarchies() if (h / rel).is_dir()]


def memory_file(cgroup_path: str, v1_name: str, v2_name: str) -> Path | None:
    """A memory controller file of the cgroup: v1's memory/<path>/<v1_name>, else v2's."""
    rel = cgroup_path.strip("/")
    for path in (CGROUP_ROOT / "memory" / rel / v1_name, CGROUP_ROOT / rel / v2_name):
        if path.exists():
            return path
    return None


def devices_v1_dir(cgroup_path: str) -> Path | None:
    """Where the v1 devices controller will keep ``cgroup_path``'s rules (it need not
    exist yet); None on a host without a v1 devices hierarchy (v2 uses a BPF program)."""
    top = CGROUP_ROOT / "devices"
    if is_unified() or not top.is_dir():
        return None
    return top / cgroup_path.strip("/")


def swap_accounting() -> bool:
    """Whether a swap limit can be set (v1 needs memsw; v2 runc handles it)."""
    if is_unified():
        return True
    return (CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists()


def remove_cgroup(cgroup_path: str) -> None:
    """rmdir the cgroup (and empty children) in every hierarchy; a no-op when gone.
    Raises ContainerError when processes still live in it."""
    for top in cgroup_dirs(cgroup_path):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
                    raise ContainerError(f"cgroup {dirpath} still has processes") from exc
                raise ContainerError(f"remove cgroup {dirpath}: {exc}") from exc


def remove_if_empty(cgroup_path: str) -> None:
    """rmdir the cgroup in every hierarchy where it has no children or processes."""
    for top in cgroup_dirs(cgroup_path):
        try:
            os.rmdir(top)
        except OSError:
            pass
