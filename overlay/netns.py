"""Named network namespaces: create, delete, list, and run work inside one.

A container's network namespace is a named netns (``/run/netns/<name>``, the iproute2
convention) so that the runc config can point at its path and ``ip netns exec`` works for
debugging. Names are created and deleted with ``ip netns add/delete`` (asyncio
subprocesses): iproute2 already does the bind-mount dance (shared ``/run/netns``) right.

Work inside a netns (opening a netlink socket there, later the DNS server's socket) runs
on a fresh thread that ``setns``'s into the target and then ends: ``setns(CLONE_NEWNET)``
moves only the calling thread, a socket stays in the netns it was created in, and a
thread that dies cannot leak its namespace to other work. Unlike pyroute2's own
``netns=`` option this never forks, which matters in a process that runs gRPC threads.

Nothing here assumes the root namespace: ``None`` always means "the netns this process
runs in", so an agent started inside its own "host" netns works unchanged.

Processes started with ``ip netns exec`` see only names visible in their mount namespace:
start agents with ``nsenter --net=...`` (shares the mount namespace), not ``ip netns exec``
(which makes a private one), if other processes must see the agent's container netns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from pyroute2 import AsyncIPRoute

from orch.errors import NetworkError

NETNS_DIR = Path("/run/netns")
"""Where iproute2 (and runc configs) find named network namespaces."""

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


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


async def _run(argv: Sequence[str], *, kill_after: float) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise NetworkError(f"cannot run {argv[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), kill_after)
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


async def create_netns(name: str, *, kill_after: float = 10.0) -> str:
    """Create the named netns ``name`` (idempotent) and return its path.

    A file left unmounted by a crash in the middle of a create is removed first.
    """
    path = netns_path(name)
    if netns_exists(name):
        return path
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    rc, _, err = await run_ip(["netns", "add", name], kill_after=kill_after)
    if rc != 0 and not netns_exists(name):
        raise NetworkError(f"cannot create netns {name}: {err.strip()}")
    return path


async def delete_netns(name: str, *, kill_after: float = 10.0) -> bool:
    """Delete the named netns ``name``; True if it existed. Safe to call twice.

    The namespace itself lives on while a process is still in it; its name goes away.
    """
    if not _name_present(name):
        return False
    rc, _, err = await run_ip(["netns", "delete", name], kill_after=kill_after)
    if rc != 0 and _name_present(name):
        raise NetworkError(f"cannot delete netns {name}: {err.strip()}")
    return True


async def exec_in_netns(
    name: str, argv: Sequence[str], *, kill_after: float = 30.0
) -> tuple[int, str, str]:
    """Run ``argv`` inside the named netns via ``ip netns exec``; (rc, stdout, stderr)."""
    if not netns_exists(name):
        raise NetworkError(f"netns {name} does not exist")
    return await _run(["ip", "netns", "exec", name, *argv], kill_after=kill_after)


def _enter_and_call(path: str, fn: Callable[[], T]) -> T:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NetworkError(f"netns {os.path.basename(path)} does not exist") from exc
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns {path}: {os.strerror(code)}")
    finally:
        os.close(fd)
    return fn()


async def run_in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn()`` with the calling thread inside the named netns ``name``.

    Runs on a fresh thread that ends afterwards, so no other work ever runs in the wrong
    namespace. ``None`` means this process's own netns (plain thread). ``fn`` should be
    short and must not start long-lived threads (they would inherit the namespace).
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
            value = _enter_and_call(netns_path(name), fn) if name else fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, value)

    threading.Thread(target=work, name=f"netns-{name}", daemon=True).start()
    return await done


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


@contextlib.asynccontextmanager
async def rtnl(name: str | None) -> AsyncIterator[AsyncIPRoute]:
    """An ``AsyncIPRoute`` whose socket lives in the named netns (None: our own netns).

    Subscribes to no multicast groups: these sockets only make requests, and unread
    events would pile up.
    """
    sock = await run_in_netns(name, _netlink_socket)
    try:
        ipr = AsyncIPRoute(use_socket=sock, groups=0)
        try:
            yield ipr
        finally:
            ipr.close()
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def is_errno(exc: BaseException, *codes: int) -> bool:
    """True if ``exc`` (NetlinkError or OSError) carries one of ``codes``."""
    code = getattr(exc, "code", None)
    if code is None and isinstance(exc, OSError):
        code = exc.errno
    return code in codes


ENOENT_LIKE = (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)
"""Errnos netlink answers for "no such object": deletes treat them as done."""

EEXIST_LIKE = (errno.EEXIST,)
"""Errnos netlink answers for "already there": creates treat them as done."""
