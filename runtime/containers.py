"""The container runtime facade the agent uses: create, start, wait, stop, exec, remove,
list, read_logs, sweep. It composes the image layers (images.py), the overlay rootfs
(rootfs.py), the OCI spec (spec.py), the runc CLI (runc.py) and the per-container shims
(shim.py), which a shim server forks on request (shims.py). Stopping signals the
container's init through a pidfd rather than `runc kill`, and mounts are syscalls: a node
that scales twenty containers up or down at once is CPU-bound, and every exec counts.

State lives in files, so a restarted agent finds everything again (adoption)::

    <state_dir>/containers/<id>/   the bundle: config.json, rootfs/ (overlay), upper/,
                                   work/, container.json (our record, written last by
                                   create), shim.pid, container.pid, exit.json, and
                                   when there is something to say runtime.log,
                                   start-error, shim.log
    <state_dir>/logs/<id>.log      CRI-format output; outlives remove() (remove_logs)
    <runc_root>/<id>/              runc's own state
    cgroup /<cgroup_parent>/<id>   in every hierarchy

Ordering and idempotency rules (what callers may rely on):

- create(config, image) is idempotent; once a container was started, create is a no-op.
  A create that fails cleans up after itself.
- start(id) requires create; starting a running container returns its pid; starting one
  that already ran (or failed to start) raises ContainerError: remove and create again.
- wait(id) may be called any number of times, concurrently, before or after the end, and
  by an agent process that did not start the container. It never polls: it waits on a
  pidfd of the shim, then reads exit.json.
- stop(id) is safe to call twice, concurrently, and on a container that never ran or has
  ended. It returns once the container has ended (or raises if SIGKILL did not help).
- remove(id) stops (SIGKILL) what still runs, then deletes runc state, mounts, cgroup and
  the container dir; it is idempotent and keeps the log file.
- exec(id, argv) requires a running container; it may run concurrently with anything
  but create/start, and a command it started ends at the latest with the container.
- sweep(prefix) only touches ids with that prefix under this runtime's own roots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal as signals
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orch.errors import ContainerError, NotFoundError
from orch.runtime import cgroups
from orch.runtime.exec import ExecProcess, start_exec
from orch.runtime.logs import read_log
from orch.runtime.model import ContainerConfig, ContainerRecord, ExitStatus, Image, LogLine
from orch.runtime.rootfs import mount_overlay, mounts_under, safe_read, unmount
from orch.runtime.runc import OciRuntime
from orch.runtime.settings import RuntimeSettings
from orch.runtime.shims import ShimServer, live_shim_pid
from orch.runtime.spec import build_spec, resolve_stop_signal, signal_number, valid_stop_signal
from orch.runtime.util import KeyedLock, atomic_write_json, private_dir, read_json

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_id(container_id: str) -> None:
    if not _ID.match(container_id):
        raise ContainerError(f"invalid container id {container_id!r}")


async def wait_pid_exit(pid: int, verify: Any = None) -> None:
    """Wait for any process (not only a child) to exit via a pidfd, without polling.
    ``verify()`` is re-checked once the pidfd pins the pid, against pid reuse."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if verify is not None and not verify():
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(fd, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


class ContainerRuntime:
    """Runs containers for one agent; every path it touches is under its settings' roots."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.runc = OciRuntime(
            settings.runtime_binary, settings.runc_root, timeout=settings.runtime_timeout
        )
        self._locks = KeyedLock()
        self._shims = ShimServer(settings.python)
        for d in (settings.state_dir, settings.containers_dir, settings.logs_dir):
            private_dir(d)
        private_dir(settings.runc_root)

    # -- paths -----------------------------------------------------------------------------

    def container_dir(self, container_id: str) -> Path:
        check_id(container_id)
        return self.settings.containers_dir / container_id

    def log_path(self, container_id: str) -> Path:
        check_id(container_id)
        return self.settings.logs_dir / f"{container_id}.log"

    def cgroups_path(self, container_id: str) -> str:
        return f"/{self.settings.cgroup_parent}/{container_id}"

    # -- create / start --------------------------------------------------------------------

    async def create(self, config: ContainerConfig, image: Image) -> None:
        """Mount the rootfs and write the bundle. Idempotent (see module docstring)."""
        cid = config.id
        d = self.container_dir(cid)
        async with self._locks.hold(cid):
            if (d / "shim.pid").exists():
                return
            existed = (d / "container.json").exists()
            try:
                await self._create(d, config, image)
            except BaseException:
                if not existed:
                    with contextlib.suppress(Exception):
                        await self._teardown(cid)
                raise

    async def _create(self, d: Path, config: ContainerConfig, image: Image) -> None:
        private_dir(d)
        rootfs = d / "rootfs"
        await mount_overlay(image.layers, d / "upper", d / "work", rootfs)
        # In a thread: the files are the image's, and a slow disk must not stall the loop
        # (safe_read refuses FIFOs and devices, which could block or act on the host).
        passwd, group = await asyncio.to_thread(_image_user_files, rootfs)
        devices = cgroups.devices_v1_dir(self.cgroups_path(config.id))
        spec = build_spec(
            config,
            image.config,
            rootfs=str(rootfs),
            cgroups_path=self.cgroups_path(config.id),
            passwd=passwd,
            group=group,
            swap_accounting=cgroups.swap_accounting(),
            nofile=self._nofile(),
            default_pids=self.settings.default_pids_limit,
            devices_v1_dir=None if devices is None else str(devices),
        )
        atomic_write_json(d / "config.json", spec)
        record = {
            "config": config.to_json(),
            "image_ref": image.ref,
            "image_digest": image.digest,
            "layers": [str(p) for p in image.layers],
            "created_at_ns": time.time_ns(),
            "stop_signal": resolve_stop_signal(config, image.config),
        }
        atomic_write_json(d / "container.json", record)

    def _nofile(self) -> int:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard == resource.RLIM_INFINITY:
            return self.settings.nofile
        return min(self.settings.nofile, hard)

    def _record(self, container_id: str) -> dict[str, Any]:
        record = read_json(self.container_dir(container_id) / "container.json")
        if record is None:
            raise NotFoundError(f"no such container {container_id}")
        return record

    async def start(self, container_id: str) -> int:
        """Launch the shim, which runs the container; returns the container's host pid
        once it runs. Raises ContainerError with the runtime's reason when it cannot."""
        d = self.container_dir(container_id)
        async with self._locks.hold(container_id):
            if not (d / "container.json").exists():
                raise NotFoundError(f"no such container {container_id}")
            exited = self._exit_status(container_id)
            if exited is not None:
                why = exited.error or f"exit code {exited.exit_code}"
                raise ContainerError(f"start {container_id}: it already ran ({why})")
            shim = self.shim_pid(container_id)
            if shim is not None:
                pid = _read_int(d / "container.pid")
                if pid is None:  # another process is starting it right now
                    raise ContainerError(f"start {container_id}: shim {shim} is starting it")
                return pid
            return await self._launch(container_id, d)

    def _shim_request(self, container_id: str, d: Path) -> dict[str, Any]:
        s = self.settings
        return {
            "id": container_id,
            "bundle": str(d),
            "runtime": s.runtime_binary,
            "root": str(s.runc_root),
            "log": str(self.log_path(container_id)),
            "line_max": s.log_line_max,
            "cgroup": self.cgroups_path(container_id),
        }

    async def _launch(self, container_id: str, d: Path) -> int:
        (d / "shim.pid").unlink(missing_ok=True)
        ready_r, ready_w = os.pipe()
        try:
            try:
                await self._shims.launch(self._shim_request(container_id, d), ready_w)
            finally:
                os.close(ready_w)
            data = await asyncio.wait_for(_read_to_end(ready_r), self.settings.start_timeout)
        except TimeoutError as exc:
            raise ContainerError(
                f"start {container_id}: no word from the shim in {self.settings.start_timeout:g}s"
            ) from exc
        finally:
            os.close(ready_r)
        try:
            message = json.loads(data.decode(errors="replace").strip() or "{}")
        except ValueError:
            message = {}
        if "pid" in message:
            return int(message["pid"])
        reason = message.get("error") or self._shim_failure(d)
        raise ContainerError(f"start {container_id}: {reason}")

    async def close(self) -> None:
        """Stop this runtime's shim server (containers and their shims run on). Optional:
        the server also ends when the process that owns this runtime exits."""
        await self._shims.close()

    @staticmethod
    def _shim_failure(d: Path) -> str:
        for name in ("start-error", "shim.log"):
            with contextlib.suppress(OSError):
                text = (d / name).read_text(errors="replace").strip()
                if text:
                    return text.splitlines()[-1]
        return "the shim exited without reporting"

    # -- wait / stop -----------------------------------------------------------------------

    def shim_pid(self, container_id: str) -> int | None:
        """The pid of this container's shim while it lives (it holds the lock on shim.pid,
        see shims.py), whichever agent process started it (adoption)."""
        return live_shim_pid(self.container_dir(container_id))

    def _exit_status(self, container_id: str) -> ExitStatus | None:
        data = read_json(self.container_dir(container_id) / "exit.json")
        return None if data is None else ExitStatus.from_json(data)

    async def wait(self, container_id: str) -> ExitStatus:
        """The container's exit status, once it has ended (see module docstring)."""
        d = self.container_dir(container_id)
        status = self._exit_status(container_id)
        if status is not None:
            return status
        self._record(container_id)
        if not (d / "shim.pid").exists():
            raise ContainerError(f"wait {container_id}: the container was never started")
        pid = self.shim_pid(container_id)
        if pid is not None:
            await wait_pid_exit(pid, lambda: self.shim_pid(container_id) == pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 reap it if we are its subreaper
            status = self._exit_status(container_id)
            if status is not None:
                return status
        return await self._lost(container_id)

    async def _lost(self, container_id: str) -> ExitStatus:
        """The shim died without an exit file: wait for the container itself (its init
        pid, via pidfd), then record an unknown status that every later reader shares."""
        cpid = self._live_container_pid(container_id)
        if cpid is not None:
            await wait_pid_exit(cpid, lambda: self._live_container_pid(container_id) == cpid)
        return self._record_lost(container_id)

    def _record_lost(self, container_id: str) -> ExitStatus:
        # The shim writes exit.json before it exits, so once it is seen dead a re-read
        # settles whether it recorded the status after our first look.
        recorded = self._exit_status(container_id)
        if recorded is not None:
            return recorded
        status = ExitStatus(
            exit_code=255,
            signal=None,
            oom_killed=False,
            finished_at=datetime.now(UTC),
            error="the shim exited without recording the container's exit status",
        )
        d = self.container_dir(container_id)
        if d.exists():
            atomic_write_json(d / "exit.json", status.to_json())
        return status

    def _live_container_pid(self, container_id: str) -> int | None:
        """The container init's pid if that process still lives in the container's cgroup
        (so a reused pid is not mistaken for it)."""
        pid = _read_int(self.container_dir(container_id) / "container.pid")
        if pid is None:
            return None
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return None
        wanted = self.cgroups_path(container_id)
        return pid if any(line.endswith(wanted) for line in text.splitlines()) else None

    async def stop(
        self, container_id: str, signal: str | None = None, grace: float | None = None
    ) -> None:
        """Send the stop signal, wait up to ``grace`` seconds, then SIGKILL."""
        d = self.container_dir(container_id)
        record = read_json(d / "container.json")
        if record is None or not (d / "shim.pid").exists():
            return  # gone or never started
        if self._exit_status(container_id) is not None:
            return
        config = ContainerConfig.from_json(record["config"])
        sig = valid_stop_signal(signal or record.get("stop_signal") or "SIGTERM", container_id)
        if grace is None:
            grace = config.stop_grace_seconds
        if grace is None:
            grace = self.settings.stop_grace
        if grace > 0 and await self._kill(container_id, sig):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait(container_id), grace)
                return
        await self._kill(container_id, "SIGKILL")
        try:
            await asyncio.wait_for(self.wait(container_id), self.settings.kill_timeout)
        except TimeoutError as exc:
            raise ContainerError(
                f"stop {container_id}: still running {self.settings.kill_timeout:g}s after SIGKILL"
            ) from exc

    async def _kill(self, container_id: str, sig: str) -> bool:
        """Signal the container's init, as `runc kill` does but without running runc (a
        Go binary per stop is real CPU when a node scales down): through a pidfd of the
        pid in container.pid, checked to be in the container's cgroup once the pidfd
        pins it, so a reused pid is never signalled. False when it is gone. ``sig`` is
        a valid name (stop() checked it)."""
        signum = signal_number(sig)
        if signum is None:
            raise ContainerError(f"kill {container_id}: unknown signal {sig!r}")
        pid = self._live_container_pid(container_id)
        if pid is None:
            return False
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        try:
            if self._live_container_pid(container_id) != pid:
                return False
            signals.pidfd_send_signal(fd, signum)
            return True
        except ProcessLookupError:
            return False
        except OSError as exc:
            raise ContainerError(f"kill {container_id} {sig}: {exc}") from exc
        finally:
            os.close(fd)

    # -- exec ------------------------------------------------------------------------------

    async def exec(
        self,
        container_id: str,
        argv: list[str],
        *,
        env: list[str] | None = None,
        stdin: bool = False,
    ) -> ExecProcess:
        """Run ``argv`` in the running container (its namespaces, cgroup, user and env,
        ``env`` "KEY=VALUE" entries over the latter; no TTY); see exec.py. Raises
        ContainerError when the container does not exist or is not running."""
        d = self.container_dir(container_id)
        record = self._describe(container_id)
        if record is None:
            raise ContainerError(f"container {container_id} does not exist")
        if record.status != "running":
            state = "stopped" if record.status == "exited" else record.status
            raise ContainerError(f"container {container_id} is not running (state: {state})")
        return await start_exec(
            binary=self.settings.runtime_binary,
            root=self.settings.runc_root,
            container_dir=d,
            container_id=container_id,
            argv=argv,
            env=env,
            stdin=stdin,
        )

    # -- remove / list / logs / sweep --------------------------------------------------------

    async def remove(self, container_id: str) -> None:
        """Kill what runs, delete runc state, unmount, remove cgroup and bundle; keep the log."""
        async with self._locks.hold(container_id):
            await self._teardown(container_id)

    async def _teardown(self, container_id: str) -> None:
        d = self.container_dir(container_id)
        if (d / "shim.pid").exists() and self._exit_status(container_id) is None:
            await self.stop(container_id, grace=0)
        pid = self.shim_pid(container_id)
        if pid is not None:  # it is writing exit.json / draining logs: let it finish
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    wait_pid_exit(pid, lambda: self.shim_pid(container_id) == pid),
                    self.settings.kill_timeout,
                )
        await self.runc.delete(container_id, force=True)
        await unmount(d)
        await asyncio.to_thread(cgroups.remove_cgroup, self.cgroups_path(container_id))
        if mounts_under(d):
            raise ContainerError(f"remove {container_id}: {d} still has mounts")
        await asyncio.to_thread(shutil.rmtree, d, True)

    def remove_logs(self, container_id: str) -> None:
        """Delete the container's log file (when the agent forgets the task)."""
        self.log_path(container_id).unlink(missing_ok=True)

    def list(self) -> list[ContainerRecord]:
        """Every container in the state dir with its status, for adoption after restart.
        Reads files and /proc only (no runtime call), so it is cheap and synchronous."""
        records = []
        for d in sorted(self.settings.containers_dir.iterdir()):
            if _ID.match(d.name):
                rec = self.get(d.name)
                if rec is not None:
                    records.append(rec)
        return records

    def get(self, container_id: str) -> ContainerRecord | None:
        """One container's record (as in list()), or None when there is none."""
        return self._describe(container_id) if _ID.match(container_id) else None

    def _describe(self, cid: str) -> ContainerRecord | None:
        d = self.container_dir(cid)
        record = read_json(d / "container.json")
        if record is None:
            return None  # debris of a create that never finished (sweep removes it)
        exit_status = self._exit_status(cid)
        pid = None
        if exit_status is not None:
            status = "exited"
        elif not (d / "shim.pid").exists():
            status = "created"
        elif self.shim_pid(cid) is not None or self._live_container_pid(cid) is not None:
            status, pid = "running", _read_int(d / "container.pid")
        else:
            exit_status, status = self._record_lost(cid), "exited"
        return ContainerRecord(
            id=cid,
            config=ContainerConfig.from_json(record["config"]),
            image_digest=record.get("image_digest", ""),
            created_at=datetime.fromtimestamp(record.get("created_at_ns", 0) / 1e9, tz=UTC),
            status=status,
            pid=pid,
            exit=exit_status,
            stop_signal=record.get("stop_signal", "SIGTERM"),
        )

    def _ended(self, container_id: str) -> bool:
        d = self.settings.containers_dir / container_id
        if (d / "exit.json").exists() or not d.exists():
            return True
        return (d / "shim.pid").exists() and self.shim_pid(container_id) is None

    def read_logs(
        self, container_id: str, tail: int = -1, follow: bool = False
    ) -> AsyncIterator[LogLine]:
        """The last ``tail`` lines (all when < 0), then with ``follow`` new lines until the
        container has ended and the log is drained. Works after remove() too (log kept)."""
        return read_log(
            self.log_path(container_id),
            tail=tail,
            follow=follow,
            ended=lambda: self._ended(container_id),
            interval=self.settings.log_follow_interval,
        )

    async def sweep(self, prefix: str = "", *, everything: bool = False) -> list[str]:
        """Remove leftovers of crashed runs whose id starts with ``prefix``: half-created
        container dirs and runc containers without a container dir (with their mounts
        and cgroups). With ``everything``, remove every container with the prefix,
        running or not. Returns the ids removed. Touches only this runtime's state dir,
        runc root and cgroup parent."""
        ids = await self.held_ids()
        removed = []
        for cid in sorted(i for i in ids if i.startswith(prefix)):
            if everything or self._is_debris(cid):
                await self.remove(cid)
                removed.append(cid)
        for tmp in self.settings.containers_dir.glob("*/.*.tmp*"):
            tmp.unlink(missing_ok=True)
        if everything:  # fails harmlessly while other containers still use it
            await asyncio.to_thread(cgroups.remove_if_empty, f"/{self.settings.cgroup_parent}")
        return removed

    async def held_ids(self) -> set[str]:
        """Ids of every container this runtime holds anything of: its container dir,
        complete or half-created (a rootfs mounted, no container.json yet: an agent killed
        mid-create), or runc state. More than list(), which names complete ones only."""
        ids = {d.name for d in self.settings.containers_dir.iterdir() if _ID.match(d.name)}
        ids |= {c["id"] for c in await self.runc.list() if c.get("id")}
        return ids

    def _is_debris(self, cid: str) -> bool:
        """A create that never finished (no container.json), or runc state without a
        container dir. Containers whose shim died are not debris: list() and wait()
        still report them (with an unknown exit status) so the agent can say so."""
        return not (self.settings.containers_dir / cid / "container.json").exists()


def _image_user_files(rootfs: Path) -> tuple[str, str]:
    """The image's /etc/passwd and /etc/group text ("" where absent or unsafe)."""
    return safe_read(rootfs, "etc/passwd"), safe_read(rootfs, "etc/group")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


async def _read_to_end(fd: int) -> bytes:
    """Everything written to pipe ``fd`` until its writers closed it (the shim's word)."""
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    done = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""  # as good as the end: the caller then says what the files say
        if chunk:
            chunks.append(chunk)
        elif not done.done():
            done.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)
