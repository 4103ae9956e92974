"""The per-container monitor (like conmon or containerd-shim): starts one container with
the OCI runtime, owns its stdout/stderr, logs them, and records how it exited.

Shims are forked by a small shim server, one per ContainerRuntime::

    python -S -I shim.py --serve FD

FD is one end of a SOCK_SEQPACKET socketpair whose other end the agent keeps (shims.py).
Each message on it is one JSON request, {id, bundle, runtime, root, log, line_max,
cgroup}, carrying the write end of the agent's readiness pipe (SCM_RIGHTS); the server
forks, and the child becomes that container's shim. The server exits when the agent's
end closes (the agent died or dropped the runtime); the shims live on.

Why forked from a server rather than exec'd per container: a fresh interpreter with the
imports a shim needs costs ~25 ms of CPU, a fork of the warm server well under 1 ms, and
a node starting twenty containers at once is CPU-bound. Why a process per container at
all: containers must outlive the agent (a restarted agent re-adopts them), so the agent
is never the container's parent; the shim is. It starts a session of its own, makes itself
a child subreaper so the container's init is reparented to it when `runc run --detach`
exits, and then waits for that init, which gives the real exit status, signal included.
The server ignores SIGCHLD, so its exited children never linger as zombies, and when it
is gone the shims are orphans of init like daemons.

Files it writes in the bundle dir (the agent's container dir):

    shim.pid        this process's pid, written before anything else, and exclusively
                    flock()ed for the shim's whole life: a held lock is how the agent
                    tells a live shim from a dead one (or a reused pid), see shims.py
    shim.log        the shim's own complaints (a traceback, say), if it has any
    container.pid   the container init's host pid (runc --pid-file)
    runtime.log     runc's own log (JSON lines), if it logged anything; the shim reads it
                    through a pipe (start errors come from it) and only then writes it
    start-error     why the container could not be started (text), if so
    exit.json       {exit_code, signal, oom_killed, finished_at_ns, finished_at, error},
                    written atomically once the container's init has exited

These are rename()d into place but not fsync()ed: they describe processes, which a host
crash ends anyway. Files are created only when needed: creating an inode on a busy ext4
costs real CPU when many were just deleted (a node scaling down and up again).

Readiness: the shim writes one JSON line to the readiness pipe, {"pid": N} or
{"error": "..."}, and closes it, so start() needs no polling.

The container's output goes to the request's log file in the CRI format, one record per
line: ``<RFC3339 time with ns> <stdout|stderr> <F|P> <bytes>``; lines longer than
line_max are cut into partial (P) records followed by a final (F) one. One thread polls
both pipes and the pidfds of runc and of the container's init, so no locks are needed
and a read's records go out in one write.

Kept to the standard library (no orch imports, no asyncio) so the server stays small.
"""

from __future__ import annotations

import _signal
import ctypes
import fcntl
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
DRAIN_TIMEOUT = 10.0
REQUEST_MAX = 1 << 16
REQUEST_FIELDS = ("id", "bundle", "runtime", "root", "log", "line_max", "cgroup")
RUNTIME_LOG_MAX = 1 << 20
_READ = 1 << 16
_RUNTIME_LOG_FD = 3  # where the runtime finds the write end of our pipe for its --log
_SIGNAL_NAMES = {s.value: s.name for s in signal.Signals}  # canonical names (no aliases)
# What the forked child uses, made plain here: every page of the server's heap a child
# writes to (a refcount will do) costs it a copy-on-write fault of several microseconds,
# and os.environ or the signal module's enum conversions touch many pages.
_ENVIRON = dict(os.environb)  # the runtime's environment: the server's
_DEFAULT_SIGNALS = (int(signal.SIGPIPE), int(signal.SIGXFSZ))  # Python ignores these
_SIGCHLD, _SIG_DFL = int(signal.SIGCHLD), _signal.SIG_DFL


def rfc3339_ns(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def read_small(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    head, _, name = path.rpartition("/")
    tmp = f"{head}/.{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_pid_locked(path: str) -> int:
    """Write our pid to ``path`` (atomically) holding an exclusive flock on it; returns
    the fd, which must stay open for the shim's life."""
    head, _, name = path.rpartition("/")
    tmp = f"{head}/.{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, str(os.getpid()).encode())
    os.replace(tmp, path)
    return fd


class Stream:
    """One output pipe of the container, cut into CRI records."""

    def __init__(self, fd: int, name: str, line_max: int) -> None:
        self.fd = fd
        self.prefix = f" {name} "
        self.line_max = line_max
        self.pending = b""

    def read(self, log_fd: int) -> bool:
        """Log what the pipe has; False at its end (every writer closed it)."""
        try:
            data = os.read(self.fd, _READ)
        except BlockingIOError:
            return True
        stamp = rfc3339_ns(time.time_ns()) + self.prefix
        if not data:
            if self.pending:
                os.write(log_fd, f"{stamp}F ".encode() + self.pending + b"\n")
                self.pending = b""
            return False
        buf = self.pending + data if self.pending else data
        final, partial = f"{stamp}F ".encode(), f"{stamp}P ".encode()
        out, start, limit, end = [], 0, self.line_max, len(buf)
        while True:  # the records readline(line_max) would give
            nl = buf.find(b"\n", start, min(start + limit, end))
            if nl >= 0:
                out += (final, buf[start:nl], b"\n")
                start = nl + 1
            elif end - start >= limit:
                out += (partial, buf[start : start + limit], b"\n")
                start += limit
            else:
                break
        self.pending = buf[start:]
        if out:
            os.write(log_fd, b"".join(out))
        return True


class Collector:
    """The runtime's own log pipe (non-blocking), kept in memory (bounded)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()

    def read(self, log_fd: int) -> bool:
        """Take what the pipe holds now; False at its end."""
        while True:
            try:
                chunk = os.read(self.fd, _READ)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            if len(self.data) < RUNTIME_LOG_MAX:
                self.data += chunk


class Monitor:
    """Polls the output pipes and the pidfds of the processes the shim waits for."""

    def __init__(self, streams: list[Stream | Collector], log_fd: int) -> None:
        self.poller = select.poll()
        self.streams = {s.fd: s for s in streams}
        self.log_fd = log_fd
        for fd in self.streams:
            self.poller.register(fd, select.POLLIN)

    def wait_exit(self, pid: int) -> int:
        """Log output until child ``pid`` exits; its wait status, or -1 if it is not our
        child (not reparented to us) or cannot be watched."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return self._reap(pid)
        self.poller.register(pidfd, select.POLLIN)
        try:
            while True:
                for fd, _ in self.poller.poll():
                    if fd == pidfd:
                        return self._reap(pid)
                    self._pump(fd)
        finally:
            self.poller.unregister(pidfd)
            os.close(pidfd)

    def drain(self, timeout: float) -> None:
        """Log output until every pipe is closed by all writers (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.streams:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, _ in self.poller.poll(int(left * 1000) + 1):
                self._pump(fd)

    def _pump(self, fd: int) -> None:
        stream = self.streams.get(fd)
        if stream is not None and not stream.read(self.log_fd):
            self.forget(fd)

    def forget(self, fd: int) -> None:
        self.poller.unregister(fd)
        os.close(fd)
        del self.streams[fd]

    @staticmethod
    def _reap(pid: int) -> int:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return -1


def runtime_error(log: bytes, default: str) -> str:
    """The message of the last error in the runtime's JSON log."""
    message = default
    for line in log.decode(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", message))
    return message


def oom_kills(cgroup: str) -> int:
    """The oom_kill counter of the container's memory cgroup (v1 or v2); 0 if unknown."""
    rel = cgroup.strip("/")
    for path in (
        f"/sys/fs/cgroup/memory/{rel}/memory.oom_control",  # v1 (incl. hybrid)
        f"/sys/fs/cgroup/{rel}/memory.events",  # v2 unified
    ):
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def decode_status(status: int) -> tuple[int, str | None]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return 128 + sig, _SIGNAL_NAMES.get(sig, f"SIG{sig}")
    return os.waitstatus_to_exitcode(status), None


def write_exit(bundle: str, code: int, sig: str | None, oom: bool, error: str | None) -> None:
    ns = time.time_ns()
    doc = {
        "exit_code": code,
        "signal": sig,
        "oom_killed": oom,
        "finished_at_ns": ns,
        "finished_at": rfc3339_ns(ns),
        "error": error,
    }
    write_atomic(f"{bundle}/exit.json", json.dumps(doc).encode())


def encode_request(request: dict[str, Any]) -> bytes:
    """A request as the server reads it: REQUEST_FIELDS as text, NUL-separated (cheaper
    to take apart in the forked child than JSON, whose decoder touches more memory)."""
    values = [str(request[f]) for f in REQUEST_FIELDS]
    if any("\0" in v for v in values):
        raise ValueError("a shim request field contains NUL")
    return "\0".join(values).encode()


def decode_request(msg: bytes) -> dict[str, str]:
    values = msg.decode().split("\0")
    if len(values) != len(REQUEST_FIELDS):
        raise ValueError(f"bad shim request: {len(values)} fields")
    return dict(zip(REQUEST_FIELDS, values, strict=True))


def report(ready_fd: int | None, message: dict[str, object] | int) -> None:
    """Tell the agent {"pid": N} (given as the int N) or {"error": ...}."""
    if ready_fd is None:
        return
    try:
        if isinstance(message, int):
            os.write(ready_fd, b'{"pid": %d}\n' % message)
        else:
            os.write(ready_fd, json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the agent went away; the files tell the story
    finally:
        os.close(ready_fd)


def spawn_runtime(req: dict[str, Any], out_w: int, err_w: int, log_w: int) -> int:
    """Start `<runtime> run --detach` with the container's stdio on our pipes and its
    own log on another (runc and crun open the --log path; /proc/self/fd/N is a pipe)."""
    bundle = req["bundle"]
    argv = [
        req["runtime"], "--root", req["root"], "--log", f"/proc/self/fd/{_RUNTIME_LOG_FD}",
        "--log-format", "json", "run", "--detach", "--bundle", bundle,
        "--pid-file", f"{bundle}/container.pid", req["id"],
    ]  # fmt: skip
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
        (os.POSIX_SPAWN_DUP2, log_w, _RUNTIME_LOG_FD),
    ]
    os.chdir(bundle)  # posix_spawn has no cwd; the shim's own cwd is "/" otherwise
    try:
        # Python ignores SIGPIPE and SIGXFSZ; the runtime and the container must not.
        return os.posix_spawnp(
            argv[0], argv, _ENVIRON, file_actions=actions, setsigdef=_DEFAULT_SIGNALS,
        )  # fmt: skip
    finally:
        os.chdir("/")


def complain(bundle: str, text: str) -> None:
    """Append to the bundle's shim.log (the shim's stderr is /dev/null)."""
    fd = os.open(f"{bundle}/shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, text.encode(errors="replace").rstrip(b"\n") + b"\n")
    finally:
        os.close(fd)


def supervise(req: dict[str, Any], ready_fd: int | None) -> int:
    """The whole life of one container's shim (in the forked child)."""
    bundle = req["bundle"]
    write_pid_locked(f"{bundle}/shim.pid")  # the fd stays open (locked) until we exit
    pid_file = f"{bundle}/container.pid"
    stale = ("container.pid", "start-error", "exit.json", "runtime.log", "shim.log")
    for name in stale:
        try:
            os.unlink(f"{bundle}/{name}")
        except FileNotFoundError:
            pass
    log_fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    rlog_r, rlog_w = os.pipe()
    os.set_blocking(rlog_r, False)
    line_max = int(req.get("line_max", 16 * 1024))
    runtime_log = Collector(rlog_r)
    monitor = Monitor(
        [Stream(out_r, "stdout", line_max), Stream(err_r, "stderr", line_max), runtime_log],
        log_fd,
    )
    start_error: str | None = None
    try:
        runc = spawn_runtime(req, out_w, err_w, rlog_w)
    except OSError as exc:
        runc, start_error = 0, f"cannot run {req['runtime']}: {exc}"
    for fd in (out_w, err_w, rlog_w):
        os.close(fd)
    if runc:
        status = monitor.wait_exit(runc)
        if runtime_log.fd in monitor.streams:  # take what runc wrote; do not wait for EOF
            runtime_log.read(log_fd)
            monitor.forget(runtime_log.fd)
        if runtime_log.data:
            write_atomic(f"{bundle}/runtime.log", bytes(runtime_log.data))
        rc = -1 if status == -1 else os.waitstatus_to_exitcode(status)
        if rc != 0:
            start_error = runtime_error(runtime_log.data, f"{req['runtime']} exited {rc}")
    cpid = 0
    if start_error is None:
        try:
            cpid = int(read_small(pid_file))
        except (OSError, ValueError) as exc:
            start_error = f"{req['runtime']} wrote no container pid: {exc}"
    if start_error is not None:
        write_atomic(f"{bundle}/start-error", start_error.encode())
        monitor.drain(DRAIN_TIMEOUT)
        write_exit(bundle, 255, None, False, start_error)
        report(ready_fd, {"error": start_error})
        return 1
    report(ready_fd, cpid)
    status = monitor.wait_exit(cpid)
    reap_orphans()
    oom = oom_kills(req.get("cgroup", "")) > 0
    monitor.drain(DRAIN_TIMEOUT)  # init is gone, so the kernel killed the rest
    if status == -1:
        write_exit(bundle, 255, None, oom, "container init was not reparented to the shim")
    else:
        code, sig = decode_status(status)
        write_exit(bundle, code, sig, oom, None)
    return 0


def reap_orphans() -> None:
    """Collect any other child that has ended: as a subreaper we inherit orphans."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_shim(libc: ctypes.CDLL, devnull: int, bundle: str) -> None:
    """Undo what the forked child inherited from the server."""
    os.setsid()  # signals to the server's process group must not reach the shim
    os.dup2(devnull, 2)  # not the agent's stderr, which the shim would hold open for days
    _signal.signal(_SIGCHLD, _SIG_DFL)  # we wait for runc and init
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        complain(bundle, f"shim {os.getpid()}: prctl(PR_SET_CHILD_SUBREAPER) failed")


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One request and the fds that came with it (close-on-exec)."""
    fds: list[int] = []
    msg, anc, _flags, _addr = sock.recvmsg(
        REQUEST_MAX, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds += [int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, usable, 4)]
    return msg, fds


def _handle(
    sock: socket.socket, libc: ctypes.CDLL, devnull: int, msg: bytes, fds: list[int]
) -> None:
    """Fork the shim of one request; the child never returns."""
    try:
        if os.fork() != 0:
            return
    except OSError as exc:
        if fds:  # our caller closes the fds it received; report() closes its own copy
            report(os.dup(fds[0]), {"error": f"cannot fork a shim: {exc}"})
        return
    code, bundle = 1, None
    try:
        sock.close()
        for extra in fds[1:]:
            os.close(extra)
        req = decode_request(msg)
        bundle = req["bundle"]
        _become_shim(libc, devnull, bundle)
        code = supervise(req, fds[0] if fds else None)
    except BaseException:
        import traceback

        if bundle is not None:
            complain(bundle, traceback.format_exc())
    finally:
        os._exit(code)


def serve(fd: int) -> int:
    """Fork a shim for every request on socket ``fd`` until the agent closes its end."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    os.chdir("/")
    os.umask(0o022)
    libc = ctypes.CDLL(None, use_errno=True)
    # Handlers rather than SIG_IGN for HUP and INT: an ignored signal stays ignored across
    # exec, and the container would inherit that; a handled one is reset to default.
    signal.signal(signal.SIGHUP, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps exited shims
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]  # fmt: skip
    gc.freeze()  # children inherit the heap: keep their collector off its (shared) pages
    while True:
        msg, fds = _receive(sock)
        if not msg:
            for extra in fds:
                os.close(extra)
            return 0  # the agent's end is closed
        try:
            _handle(sock, libc, devnull, msg, fds)
        finally:
            for passed in fds:
                os.close(passed)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--serve" or not args[1].isdigit():
        print("usage: shim.py --serve FD", file=sys.stderr)
        return 2
    return serve(int(args[1]))


if __name__ == "__main__":
    sys.exit(main())
