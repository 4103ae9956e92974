"""Named network namespaces: create, delete, list, and run work inside one.

A container's network namespace is a named netns (``/run/netns/<name>``, the iproute2
convention) so that the runc config can point at its path and ``ip netns exec`` works for
debugging. We create and delete them natively, the way ``ip netns add/delete`` does, not
by running ``ip``: a subprocess per container start and stop cost more CPU than the rest
of the network setup. Create = ``unshare(CLONE_NEWNET)`` on a throwaway thread, then bind
mount that thread's ``/proc/thread-self/ns/net`` onto ``/run/netns/<name>``; delete =
``umount2(MNT_DETACH)`` + unlink. As iproute2 does, ``/run/netns`` is made a shared mount
(once per process) so that netns mounts propagate to mount namespaces made later and an
unmount reaches them too. A new netns gets lo up right away (by the creating thread,
which is already inside it), since every user wants it.

Work inside a netns (netlink requests there, later the DNS server's socket) runs on a
fresh thread that ``setns``'s into the target and then ends: ``setns(CLONE_NEWNET)``
moves only the calling thread, a socket stays in the netns it was created in, and a
thread that dies cannot leak its namespace to other work. This never forks, which
matters in a process that runs gRPC threads.

Nothing here assumes the root namespace: ``None`` always means "the netns this process
runs in", so an agent started inside its own "host" netns works unchanged.

Processes started with ``ip netns exec`` see only names visible in their mount namespace:
start agents with ``nsenter --net=...`` (shares the mount namespace), not ``ip netns exec``
(which makes a private one), if other processes must see the agent's container netns.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import ctypes
import errno
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from orch.errors import NetworkError
from orch.overlay.rtnl import Rtnl

NETNS_DIR = Path("/run/netns")
"""Where iproute2 (and runc configs) find named network namespaces."""

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
LOOPBACK_INDEX = 1
"""The kernel always gives a netns's lo ifindex 1 (LOOPBACK_IFINDEX)."""

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

_run_dir_lock = threading.Lock()
_run_dir_shared = False


def netns_path(name: str) -> str:
    """Path of the named netns ``name`` (what the runc config references)."""
    if not name or "/" in name or name in (".", ".."):
        raise NetworkError(f"bad netns name {name!r}")
    return str(NETNS_DIR / name)


def netns_exists(name: str) -> bool:
    """True if ``name`` is a mounted named netns."""
    return os.path.ismount(netns_path(name))


def _name_present(name: str) -> bool:
    return os.path.lexists(netns_path(name))


def list_netns(prefix: str = "") -> list[str]:
    """Names of named netns starting with ``prefix``, sorted."""
    try:
        entries = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if e.startswith(prefix))


async def run_ip(argv: Sequence[str], *, kill_after: float = 10.0) -> tuple[int, str, str]:
    """Run ``ip *argv``; return (returncode, stdout, stderr). Killed after ``kill_after`` seconds."""
    return await _run(["ip", *argv], kill_after=kill_after)


async def run_command(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    stdin: str | None = None,
    kill_after: float = 10.0,
) -> tuple[int, str, str]:
    """Run ``argv`` (in the named netns ``netns`` through ``nsenter --net``, which keeps
    the mount namespace, unlike ``ip netns exec``), feeding it ``stdin``;
    (returncode, stdout, stderr)."""
    if netns:
        argv = ["nsenter", f"--net={netns_path(netns)}", *argv]
    return await _run(argv, kill_after=kill_after, stdin=stdin)


async def _run(
    argv: Sequence[str], *, kill_after: float, stdin: str | None = None
) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise NetworkError(f"cannot run {argv[0]}: {exc}") from exc
    data = stdin.encode() if stdin is not None else None
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), kill_after)
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise NetworkError(f"{' '.join(argv)}: no answer within {kill_after:g}s, killed") from exc
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _share_run_dir() -> None:
    """Make ``/run/netns`` a shared mount point, once per process (what ``ip netns add``
    does on every call): bind it onto itself first if it is not a mount point yet."""
    global _run_dir_shared
    with _run_dir_lock:
        if _run_dir_shared:
            return
        NETNS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        run_dir = str(NETNS_DIR).encode()
        if _libc.mount(b"", run_dir, b"none", MS_SHARED | MS_REC, None) != 0:
            if ctypes.get_errno() != errno.EINVAL:
                _check(-1, f"mount --make-shared {NETNS_DIR}")
            _check(
                _libc.mount(run_dir, run_dir, b"none", MS_BIND | MS_REC, None),
                f"mount --bind {NETNS_DIR} {NETNS_DIR}",
            )
            _check(
                _libc.mount(b"", run_dir, b"none", MS_SHARED | MS_REC, None),
                f"mount --make-shared {NETNS_DIR}",
            )
        _run_dir_shared = True


def _loopback_up() -> None:
    with Rtnl() as rtnl:
        rtnl.set_link(LOOPBACK_INDEX, up=True)


def _unmount(path: str) -> None:
    """Unmount and unlink a netns name; a name that is not (or no longer) there is fine."""
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):
            raise OSError(code, f"umount {path}: {os.strerror(code)}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _create(path: str) -> None:
    """Runs on a throwaway thread: it ends up inside the new netns."""
    _share_run_dir()
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        _check(
            _libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
            f"mount --bind onto {path}",
        )
        _loopback_up()
    except BaseException:
        _unmount(path)
        raise


async def create_netns(name: str) -> str:
    """Create the named netns ``name`` with lo up (idempotent) and return its path.

    A file left unmounted by a crash in the middle of a create is removed first.
    """
    path = netns_path(name)
    try:
        if netns_exists(name):
            await run_in_netns(name, _loopback_up)
            return path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        await run_in_netns(None, lambda: _create(path))
    except OSError as exc:
        if exc.errno == errno.EEXIST and netns_exists(name):
            return path  # made by a racing create
        raise NetworkError(f"cannot create netns {name}: {exc}") from exc
    return path


async def delete_netns(name: str) -> bool:
    """Delete the named netns ``name``; True if it existed. Safe to call twice.

    The namespace itself lives on while a process (or socket) still uses it; its name
    goes away.
    """
    path = netns_path(name)
    if not _name_present(name):
        return False
    try:
        # umount2 waits for an RCU grace period: not on the event loop.
        await asyncio.to_thread(_unmount, path)
    except OSError as exc:
        raise NetworkError(f"cannot delete netns {name}: {exc}") from exc
    return True


async def exec_in_netns(
    name: str, argv: Sequence[str], *, kill_after: float = 30.0
) -> tuple[int, str, str]:
    """Run ``argv`` inside the named netns via ``ip netns exec``; (rc, stdout, stderr)."""
    if not netns_exists(name):
        raise NetworkError(f"netns {name} does not exist")
    return await _run(["ip", "netns", "exec", name, *argv], kill_after=kill_after)


def open_netns(name: str) -> int:
    """An O_RDONLY fd of the named netns (for setns or IFLA_NET_NS_FD); caller closes it."""
    path = netns_path(name)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NetworkError(f"netns {name} does not exist") from exc


def enter_fd(fd: int, name: str) -> None:
    """Move the calling thread into the netns ``fd`` refers to. Only on throwaway
    threads (``run_in_netns``): the thread stays there."""
    _check(_libc.setns(fd, CLONE_NEWNET), f"setns into netns {name}")


def enter_netns(name: str) -> None:
    """Move the calling thread into the named netns (see ``enter_fd``)."""
    fd = open_netns(name)
    try:
        enter_fd(fd, name)
    finally:
        os.close(fd)


async def run_in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn()`` with the calling thread inside the named netns ``name``.

    Runs on a fresh thread that ends afterwards, so no other work ever runs in the wrong
    namespace; ``fn`` may therefore move its thread on into yet another netns
    (``enter_netns``). ``None`` means this process's own netns. ``fn`` should be short
    and must not start long-lived threads (they would inherit the namespace).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: object) -> None:
        if done.cancelled():
            return
        if ok:
            done.set_result(value)  # type: ignore[arg-type]
        else:
            done.set_exception(value)  # type: ignore[arg-type]

    def work() -> None:
        try:
            if name:
                enter_netns(name)
            result = (True, fn())
        except BaseException as exc:
            result = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            loop.call_soon_threadsafe(settle, *result)

    # A bare thread: threading.Thread.start() would block the event loop until the new
    # thread gets the GIL, which takes milliseconds while other workers run.
    _thread.start_new_thread(work, ())
    return await done


def is_errno(exc: BaseException, *codes: int) -> bool:
    """True if ``exc`` (an OSError, NetlinkError included) carries one of ``codes``."""
    return isinstance(exc, OSError) and exc.errno in codes


ENOENT_LIKE = (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)
"""Errnos netlink answers for "no such object": deletes treat them as done."""

EEXIST_LIKE = (errno.EEXIST,)
"""Errnos netlink answers for "already there": creates treat them as done."""
