"""The agent's side of the shims: have the shim server fork one per container, and tell a
live shim from a dead one.

Starting a shim is a message, not a process spawn: one server per ContainerRuntime
(`python -S -I shim.py --serve FD`, started on first use and again if it died) forks the
shims, so a shim costs a fork of a small warm process instead of a fresh interpreter
(~25 ms of CPU each, which adds up when a node starts twenty containers at once). The
request travels over a SOCK_SEQPACKET socketpair together with the write end of the
readiness pipe (SCM_RIGHTS), so the shim answers the caller directly. The server exits
when our end of the socket closes (close(), or the agent exiting); shims do not depend
on it.

Liveness: a shim holds an exclusive flock on its shim.pid for its whole life, so "the
lock is held" means "the shim that wrote this pid lives", with no /proc matching and no
confusion with a reused pid (the kernel drops the lock when the process dies).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Any

from orch.errors import ContainerError
from orch.runtime.shim import encode_request

SHIM_SCRIPT = str(Path(__file__).with_name("shim.py"))
SERVER_STOP_TIMEOUT = 5.0


class ShimServer:
    """One shim server, started on first use (and again if it died)."""

    def __init__(self, python: str) -> None:
        self.python = python
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def launch(self, request: dict[str, Any], ready_fd: int) -> None:
        """Have the server fork a shim for ``request`` (see shim.py); the shim reports on
        ``ready_fd``, a pipe's write end that the caller still owns and closes."""
        data = encode_request(request)
        fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [ready_fd]))]
        for attempt in range(2):
            sock = await self._connected()
            try:
                await _send(sock, data, fds)
                return
            except OSError as exc:  # EPIPE/ECONNRESET: the server died; start another
                self._drop(sock)
                if attempt:
                    raise ContainerError(f"cannot reach the shim server: {exc}") from exc

    async def close(self) -> None:
        """Stop the server (running shims are not affected)."""
        sock, proc = self._sock, self._proc
        self._sock = self._proc = None
        if sock is not None:
            sock.close()
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), SERVER_STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def _connected(self) -> socket.socket:
        async with self._lock:
            if self._sock is None:
                self._sock = await self._spawn()
            return self._sock

    async def _spawn(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.python, "-S", "-I", SHIM_SCRIPT, "--serve", str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                cwd="/",
            )  # fmt: skip
        except OSError as exc:
            ours.close()
            raise ContainerError(f"cannot start the shim server ({self.python}): {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        return ours

    def _drop(self, sock: socket.socket) -> None:
        sock.close()
        if self._sock is sock:
            self._sock = None  # the old process is reaped by asyncio's child watcher


async def _send(sock: socket.socket, data: bytes, fds: list[Any]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            sock.sendmsg([data], fds)
            return
        except BlockingIOError:  # the server is behind: wait until it reads
            await _writable(loop, sock)


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_writer(sock, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(sock)


def live_shim_pid(bundle: Path) -> int | None:
    """The pid in ``bundle``/shim.pid if that shim is alive (holds the file's lock)."""
    try:
        fd = os.open(bundle / "shim.pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            data = os.read(fd, 32)
            return int(data) if data.strip().isdigit() else None
        return None  # nobody holds it: the shim is gone (our shared lock ends with close)
    finally:
        os.close(fd)
