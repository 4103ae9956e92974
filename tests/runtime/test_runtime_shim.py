"""The shim's pieces: CRI records cut from pipe reads, the request encoding, exit status
names, the flock that tells a live shim from a dead one (real processes), and the shim
server on the real thing: it is started again when it died, and start errors keep
runc's log."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import wait_until

from orch.errors import ContainerError
from orch.runtime import shim
from orch.runtime.containers import ContainerRuntime, wait_pid_exit
from orch.runtime.images import ImageStore
from orch.runtime.model import ContainerConfig
from orch.runtime.shims import SHIM_SCRIPT, live_shim_pid
from orch.runtime.spec import signal_number


def records(tmp_path: Path, chunks: list[bytes], line_max: int) -> list[tuple[str, bytes]]:
    """(stream tag, data) of the records a Stream writes for these pipe reads."""
    r, w = os.pipe()
    log = tmp_path / "c.log"
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    stream = shim.Stream(r, "stdout", line_max)
    try:
        for chunk in chunks:
            os.write(w, chunk)
            assert stream.read(log_fd)
        os.close(w)
        assert not stream.read(log_fd)
    finally:
        os.close(r)
        os.close(log_fd)
    out = []
    for line in log.read_bytes().splitlines():
        _ts, name, tag, data = line.split(b" ", 3)
        assert name == b"stdout"
        out.append((tag.decode(), data))
    return out


def test_records_match_what_readline_would_cut(tmp_path: Path) -> None:
    got = records(tmp_path, [b"one\ntwo\nthr", b"ee\n" + b"a" * 10 + b"\n", b"12345678\ntail"], 8)
    assert got == [
        ("F", b"one"),
        ("F", b"two"),
        ("F", b"three"),
        ("P", b"aaaaaaaa"),
        ("F", b"aa"),
        ("P", b"12345678"),  # exactly line_max: a partial, then an empty final record
        ("F", b""),
        ("F", b"tail"),  # no newline at the end of the stream
    ]


def test_long_line_over_many_reads(tmp_path: Path) -> None:
    got = records(tmp_path, [b"x" * 5, b"x" * 5, b"x" * 5 + b"\n"], 4)
    assert got == [("P", b"xxxx")] * 3 + [("F", b"xxx")]


def test_request_round_trip_and_refusal() -> None:
    req = {
        "id": "c1", "bundle": "/b", "runtime": "runc", "root": "/r", "log": "/l.log",
        "line_max": 64, "cgroup": "/orch/c1",
    }  # fmt: skip
    assert shim.decode_request(shim.encode_request(req)) == {k: str(v) for k, v in req.items()}
    with pytest.raises(ValueError):
        shim.encode_request({**req, "id": "a\0b"})
    with pytest.raises(ValueError):
        shim.decode_request(b"too\0few")


def test_exit_status_names() -> None:
    assert shim.decode_status(3 << 8) == (3, None)
    assert shim.decode_status(signal.SIGKILL) == (137, "SIGKILL")
    assert shim.decode_status(signal.SIGABRT) == (134, "SIGABRT")  # not its alias SIGIOT


def test_signal_numbers() -> None:
    assert signal_number("SIGTERM") == signal.SIGTERM
    assert signal_number("usr1") == signal.SIGUSR1
    assert signal_number("9") == 9
    assert signal_number("RTMIN+3") == signal.SIGRTMIN + 3  # systemd images stop with it
    assert signal_number("SIGRTMAX-1") == signal.SIGRTMAX - 1
    for bad in ("SIGNOPE", "0", "65", "RTMIN+99", "RTMIN+x", ""):
        assert signal_number(bad) is None, bad


HOLDER = """
import sys, time
sys.path.append(sys.argv[1])
import shim
shim.write_pid_locked(sys.argv[2])
print("locked", flush=True)
time.sleep(60)
"""


def test_a_live_shim_is_one_that_holds_the_lock(tmp_path: Path) -> None:
    pid_file = tmp_path / "shim.pid"
    assert live_shim_pid(tmp_path) is None  # no file
    pid_file.write_text(str(os.getpid()))  # a pid, even a live one, but nobody's lock
    assert live_shim_pid(tmp_path) is None
    holder = subprocess.Popen(
        [sys.executable, "-S", "-I", "-c", HOLDER, str(Path(SHIM_SCRIPT).parent), str(pid_file)],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert live_shim_pid(tmp_path) == holder.pid
        assert live_shim_pid(tmp_path) == holder.pid  # checking does not take the lock
    finally:
        holder.kill()
        holder.wait()
    assert live_shim_pid(tmp_path) is None


@pytest.mark.integration
async def test_a_dead_shim_server_is_started_again(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    image = await image_store.pull(busybox_ref)
    ids = [f"{prefix}-srv{i}" for i in range(2)]
    for cid in ids:
        await runtime.create(
            ContainerConfig(id=cid, image=busybox_ref, command=["sleep", "1000"]), image
        )
    first = await runtime.start(ids[0])
    server = runtime._shims._proc
    assert server is not None
    server.kill()
    await server.wait()
    second = await runtime.start(ids[1])  # a new server forks this shim
    assert runtime._shims._proc is not None and runtime._shims._proc.pid != server.pid
    assert {r.id: (r.status, r.pid) for r in runtime.list()} == {
        ids[0]: ("running", first),
        ids[1]: ("running", second),
    }
    await runtime.close()  # the shims do not depend on the server
    shims = [runtime.shim_pid(cid) for cid in ids]
    assert all(shims)
    await runtime.stop(ids[0], grace=0)
    assert (await runtime.wait(ids[0])).signal == "SIGKILL"
    assert runtime.shim_pid(ids[1]) == shims[1]


@pytest.mark.integration
async def test_start_error_keeps_the_runtime_log(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    cid = f"{prefix}-nolog"
    image = await image_store.pull(busybox_ref)
    await runtime.create(ContainerConfig(id=cid, image=busybox_ref, command=["/nope"]), image)
    with pytest.raises(ContainerError, match="no such file"):
        await runtime.start(cid)
    d = runtime.container_dir(cid)
    assert "no such file" in (d / "start-error").read_text()
    assert b'"level":"error"' in (d / "runtime.log").read_bytes()
    assert not (d / "shim.log").exists()  # the shim had nothing to complain about


@pytest.mark.integration
async def test_shim_complaints_land_in_shim_log(
    runtime: ContainerRuntime, image_store: ImageStore, busybox_ref: str, prefix: str
) -> None:
    """A shim that fails (here: its log dir is gone) says why in shim.log, and start()
    reports that line."""
    cid = f"{prefix}-broken"
    image = await image_store.pull(busybox_ref)
    await runtime.create(ContainerConfig(id=cid, image=busybox_ref, command=["true"]), image)
    runtime.settings.logs_dir.rmdir()
    try:
        with pytest.raises(ContainerError, match="No such file or directory"):
            await runtime.start(cid)
        text = (runtime.container_dir(cid) / "shim.log").read_text()
        assert "Traceback" in text and str(runtime.log_path(cid)) in text
        pid = wait_until(lambda: _pid_or_none(runtime.container_dir(cid)), 10, what="shim.pid")
        await asyncio.wait_for(wait_pid_exit(int(pid)), 10)
        assert runtime.shim_pid(cid) is None
    finally:
        runtime.settings.logs_dir.mkdir()


def _pid_or_none(d: Path) -> str | None:
    text = (d / "shim.pid").read_text().strip() if (d / "shim.pid").exists() else ""
    return text or None
