"""Run a command inside a running container: `runc exec`, as an asyncio subprocess.

Health probes use it now and `orch exec` will later, so it is a small general primitive:
``ContainerRuntime.exec(id, argv)`` returns an ``ExecProcess`` with the command's stdout
and stderr as asyncio streams, an optional stdin, ``wait()`` for the exit code and
``kill()``.

Why it is shaped so:

- **The container's process spec, not runc's flags.** We hand runc a process.json made
  from the container's own config.json process (user, cwd, capabilities, rlimits, env)
  with our argv and the extra env merged over it (a key given again replaces the
  container's value), so the command runs as the container's main process does, in its
  namespaces and cgroup. No terminal.
- **runc stays in the middle.** Without a TTY and without --detach runc copies the
  command's stdio to its own and exits with the command's status, so we can wait on our
  own child (a detached command would be nobody's child we could reap). runc keeps the
  streams open until every process holding them is gone, as `docker exec` does.
- **Killing reaches the command, not only runc.** runc's init calls setsid, so the command
  leads its own process group outside runc's. ``kill()`` SIGKILLs that group (its pid comes
  from runc's --pid-file) and every child runc has at that moment (a command runc is still
  setting up), then runc itself. Killing only runc would leave the command running inside
  the container. runc is signalled through a pidfd taken when it started, never through
  ``Process.kill()``: Popen's send_signal first polls, which reaps an exited runc behind
  asyncio's child watcher (that then reports 255), and a bare pid may have been reused.
- **Exit codes as Docker reports them.** runc answers 255 when it cannot start the command;
  its JSON log (--log) says why. "not found" becomes 127 and "permission denied" 126 (the
  shell's conventions, which `docker exec` follows); any other runc failure (the container
  stopped meanwhile) raises ContainerError from ``wait()``.

The process spec, pid file and runc log live in the container's directory as
``exec-<token>.*`` and are removed by ``wait()`` (or with the container).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orch.errors import ContainerError
from orch.runtime.spec import merge_env
from orch.runtime.util import atomic_write_json, read_json

NOT_FOUND_EXIT = 127
"""The shell's (and Docker's) exit code for a command that does not exist."""
NOT_EXECUTABLE_EXIT = 126
"""... and for one that exists but cannot be executed."""
RUNC_FAILED_EXIT = 255
"""What runc exits with when it could not run the command at all."""


class ExecProcess:
    """One command running in a container. Read ``stdout``/``stderr`` (or the command may
    block once a pipe is full), write ``stdin`` when it was asked for, ``wait()`` for the
    exit code; ``kill()`` ends it. ``wait()`` may be called several times."""

    def __init__(
        self, container_id: str, proc: asyncio.subprocess.Process, files: ExecFiles
    ) -> None:
        self.container_id = container_id
        self._proc = proc
        self._files = files
        try:
            self._runc_fd: int | None = os.pidfd_open(proc.pid)
        except ProcessLookupError:  # already gone (and reaped): nothing left to kill
            self._runc_fd = None
        self._result: int | None = None
        self._error: ContainerError | None = None
        self._settled = asyncio.Lock()
        assert proc.stdout is not None and proc.stderr is not None
        self.stdout: asyncio.StreamReader = proc.stdout
        self.stderr: asyncio.StreamReader = proc.stderr
        self.stdin: asyncio.StreamWriter | None = proc.stdin

    @property
    def pid(self) -> int | None:
        """The command's host pid once runc has started it (None before, or if it could
        not start)."""
        return _read_pid(self._files.pid)

    async def wait(self) -> int:
        """The command's exit code (128+N when killed by signal N; 127/126 when it was not
        found / not executable). Raises ContainerError when runc could not run it for
        another reason, e.g. the container stopped."""
        async with self._settled:
            if self._result is None and self._error is None:
                await self._settle()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def _settle(self) -> None:
        code = await self._proc.wait()
        self._close_pidfd()
        try:
            code = -code + 128 if code < 0 else code  # runc itself was killed
            failure = self._files.runc_error() if code == RUNC_FAILED_EXIT else None
            if failure is None:
                self._result = code
            elif _means(failure, "not found", "no such file or directory"):
                self._result = NOT_FOUND_EXIT
            elif _means(failure, "permission denied", "is a directory"):
                self._result = NOT_EXECUTABLE_EXIT
            elif _means(failure, "stopped container", "not running"):
                self._error = ContainerError(
                    f"container {self.container_id} is not running (state: stopped)"
                )
            else:
                self._error = ContainerError(f"exec in {self.container_id}: {failure}")
        finally:
            self._files.remove()

    def kill(self) -> None:
        """SIGKILL the command (its process group) and runc. Safe to call at any time,
        also twice and after the end."""
        if self._proc.returncode is not None or self._runc_fd is None:
            return
        runc = self._proc.pid
        targets = set(_children(runc))
        pid = _read_pid(self._files.pid)
        if pid is not None and _parent_of(pid) == runc:  # not a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for child in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._runc_fd, signal.SIGKILL)

    def _close_pidfd(self) -> None:
        if self._runc_fd is not None:
            os.close(self._runc_fd)
            self._runc_fd = None

    def __del__(self) -> None:
        self._close_pidfd()


class ExecFiles:
    """The files of one exec in the container's directory."""

    def __init__(self, container_dir: Path) -> None:
        stem = container_dir / f"exec-{secrets.token_hex(6)}"
        self.process = stem.with_suffix(".json")
        self.pid = stem.with_suffix(".pid")
        self.log = stem.with_suffix(".log")

    def remove(self) -> None:
        for path in (self.process, self.pid, self.log):
            path.unlink(missing_ok=True)

    def runc_error(self) -> str | None:
        """The last error runc logged (its JSON log), or None when it logged none (the
        command itself exited 255)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return None
        message = None
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                message = str(entry.get("msg", ""))
        return message


def process_spec(
    config: dict[str, Any], argv: Sequence[str], env: Sequence[str] | None
) -> dict[str, Any]:
    """Pure: the process.json of an exec, from the container's config.json."""
    base = config.get("process") or {}
    process = dict(base)
    process["args"] = list(argv)
    process["env"] = merge_env(base.get("env") or [], env or [])
    process["terminal"] = False
    process.pop("consoleSize", None)
    return process


async def start_exec(
    *,
    binary: str,
    root: Path,
    container_dir: Path,
    container_id: str,
    argv: Sequence[str],
    env: Sequence[str] | None,
    stdin: bool,
) -> ExecProcess:
    """Start ``argv`` in the (running) container through ``binary`` (runc or crun)."""
    if not argv or not argv[0]:
        raise ContainerError(f"exec in {container_id}: no command given")
    config = read_json(container_dir / "config.json")
    if config is None:
        raise ContainerError(f"container {container_id} does not exist")
    files = ExecFiles(container_dir)
    atomic_write_json(files.process, process_spec(config, argv, env))
    cmd = [
        binary, "--root", str(root), "--log", str(files.log), "--log-format", "json",
        "exec", "--process", str(files.process), "--pid-file", str(files.pid), container_id,
    ]  # fmt: skip
    spawn = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    )
    try:
        proc = await asyncio.shield(spawn)
    except OSError as exc:
        files.remove()
        raise ContainerError(f"exec in {container_id}: cannot run {binary}: {exc}") from exc
    except asyncio.CancelledError:
        # Cancelled while runc was being started: it may run anyway, unseen. End it.
        with contextlib.suppress(Exception):
            doomed = ExecProcess(container_id, await spawn, files)
            doomed.kill()
            await doomed.wait()
        files.remove()
        raise
    return ExecProcess(container_id, proc, files)


def _means(message: str, *needles: str) -> bool:
    low = message.lower()
    return any(n in low for n in needles)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (/proc/<pid>/task/*/children)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                out += [
                    int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
                ]
    return out


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` from /proc/<pid>/stat (the field after the ")" of comm)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None
