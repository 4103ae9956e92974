"""The per-container monitor (like conmon or containerd-shim): starts one container with
the OCI runtime, owns its stdout/stderr, logs them, and records how it exited.

    python -m orch.runtime.shim --id ID --bundle DIR --runtime runc --root RUNC_ROOT \\
        --log LOGFILE [--line-max N] [--ready-fd FD]

Why a separate process: containers must outlive the agent (an agent restart re-adopts
them). So the agent never is the container's parent; this shim is. It detaches (the agent
starts it in a new session; it forks once more and the first process exits, so it is
nobody's child but init's), makes itself a child subreaper so the container's init is
reparented to it when `runc run --detach` exits, and then waits for that init with
waitpid, which gives the real exit status, signal included.

Files it writes in the bundle dir (the agent's container dir):

    shim.pid        this process's pid, written before anything else
    container.pid   the container init's host pid (runc --pid-file)
    runtime.log     runc's own log (JSON lines); start errors are read from it
    start-error     why the container could not be started (text), if so
    exit.json       {exit_code, signal, oom_killed, finished_at_ns, finished_at, error},
                    written atomically once the container's init has exited

Readiness: the agent passes the write end of a pipe (--ready-fd); the shim writes one
JSON line, {"pid": N} or {"error": "..."}, and closes it, so start() needs no polling.

The container's output goes to LOGFILE in the CRI format, one record per line:
``<RFC3339 time with ns> <stdout|stderr> <F|P> <bytes>``; lines longer than --line-max
are cut into partial (P) records followed by a final (F) one.

Kept to the standard library (no orch imports, no asyncio) so each shim stays small.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
DRAIN_TIMEOUT = 10.0


def rfc3339_ns(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CriLog:
    """Appends CRI records to the log file; one write() per record under a lock, so the
    stdout and stderr readers never interleave within a record."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._lock = threading.Lock()

    def write(self, stream: str, tag: str, data: bytes) -> None:
        record = f"{rfc3339_ns(time.time_ns())} {stream} {tag} ".encode() + data + b"\n"
        with self._lock:
            os.write(self._fd, record)


def pump(fd: int, stream: str, log: CriLog, line_max: int) -> None:
    """Copy one pipe into the log, line by line, until every writer has closed it."""
    with os.fdopen(fd, "rb", buffering=1 << 16) as pipe:
        while True:
            chunk = pipe.readline(line_max)
            if not chunk:
                return
            if chunk.endswith(b"\n"):
                log.write(stream, "F", chunk[:-1])
            elif len(chunk) >= line_max:
                log.write(stream, "P", chunk)
            else:  # the stream ended without a newline
                log.write(stream, "F", chunk)


def runtime_error(log_file: Path, default: str) -> str:
    """The message of the last error in the runtime's JSON log."""
    message = default
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return message
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", message))
    return message


def oom_kills(bundle: Path) -> int:
    """The oom_kill counter of the container's memory cgroup (v1 or v2); 0 if unknown."""
    try:
        spec = json.loads((bundle / "config.json").read_text())
        cgpath = spec["linux"]["cgroupsPath"].strip("/")
    except (OSError, ValueError, KeyError):
        return 0
    for path in (
        Path("/sys/fs/cgroup/memory", cgpath, "memory.oom_control"),  # v1 (incl. hybrid)
        Path("/sys/fs/cgroup", cgpath, "memory.events"),  # v2 unified
    ):
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return 0


def decode_status(status: int) -> tuple[int, str | None]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name: str | None = signal.Signals(sig).name
        except ValueError:
            name = f"SIG{sig}"
        return 128 + sig, name
    return os.waitstatus_to_exitcode(status), None


def write_exit(bundle: Path, code: int, sig: str | None, oom: bool, error: str | None) -> None:
    ns = time.time_ns()
    doc = {
        "exit_code": code,
        "signal": sig,
        "oom_killed": oom,
        "finished_at_ns": ns,
        "finished_at": rfc3339_ns(ns),
        "error": error,
    }
    write_atomic(bundle / "exit.json", json.dumps(doc).encode())


def report(ready_fd: int | None, message: dict[str, object]) -> None:
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the agent went away; the files tell the story
    finally:
        os.close(ready_fd)


def wait_for(pid: int) -> int:
    """Reap children (we are a subreaper: orphans land here) until ``pid`` exits."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return -1
        if reaped == pid:
            return status


def supervise(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    runtime_log = bundle / "runtime.log"
    pid_file = bundle / "container.pid"
    for stale in (pid_file, bundle / "start-error", bundle / "exit.json", runtime_log):
        stale.unlink(missing_ok=True)
    log = CriLog(Path(args.log))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    argv = [
        args.runtime, "--root", args.root, "--log", str(runtime_log), "--log-format", "json",
        "run", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file), args.id,
    ]  # fmt: skip
    try:
        runc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=bundle
        )
    except OSError as exc:
        runc = None
        start_error: str | None = f"cannot run {args.runtime}: {exc}"
    os.close(out_w)
    os.close(err_w)
    pumps = [
        threading.Thread(target=pump, args=(fd, name, log, args.line_max), daemon=True)
        for fd, name in ((out_r, "stdout"), (err_r, "stderr"))
    ]
    for t in pumps:
        t.start()
    if runc is not None:
        rc = runc.wait()
        start_error = None if rc == 0 else runtime_error(runtime_log, f"{args.runtime} exited {rc}")
    cpid = 0
    if start_error is None:
        try:
            cpid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            start_error = f"{args.runtime} wrote no container pid: {exc}"
    if start_error is not None:
        write_atomic(bundle / "start-error", start_error.encode())
        for t in pumps:
            t.join(DRAIN_TIMEOUT)
        write_exit(bundle, 255, None, False, start_error)
        report(args.ready_fd, {"error": start_error})
        return 1
    report(args.ready_fd, {"pid": cpid})
    status = wait_for(cpid)
    oom = oom_kills(bundle) > 0
    for t in pumps:  # init is gone, so the kernel killed the rest; drain what they wrote
        t.join(DRAIN_TIMEOUT)
    if status == -1:
        write_exit(bundle, 255, None, oom, "container init was not reparented to the shim")
    else:
        code, sig = decode_status(status)
        write_exit(bundle, code, sig, oom, None)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="orch.runtime.shim")
    p.add_argument("--id", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--runtime", default="runc")
    p.add_argument("--root", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--line-max", type=int, default=16 * 1024)
    p.add_argument("--ready-fd", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (the agent used start_new_session)
    if os.fork() != 0:
        os._exit(0)  # the agent reaps this first process; the shim lives on in the child
    os.chdir("/")
    os.umask(0o022)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"shim {args.id}: prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
    # Handlers rather than SIG_IGN: an ignored signal stays ignored across exec, and the
    # container would inherit that; a handled one is reset to default.
    signal.signal(signal.SIGHUP, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    write_atomic(Path(args.bundle) / "shim.pid", str(os.getpid()).encode())
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
