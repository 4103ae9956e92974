"""Reading CRI-format log files: tail counting logical lines, partial records joined,
following a file that grows until the writer says it has ended."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orch.runtime.logs import parse_record, read_log, tail_span
from orch.runtime.shim import rfc3339_ns


def rec(n: int, stream: str, tag: str, data: str) -> bytes:
    return f"2026-01-01T00:00:{n:02d}.000000000Z {stream} {tag} {data}\n".encode()


async def collect(path: Path, **kw: object) -> list[tuple[str, bytes]]:
    return [(line.stream, line.line) async for line in read_log(path, **kw)]  # type: ignore[arg-type]


def test_parse_record_and_timestamp_format() -> None:
    assert parse_record(b"T stdout F hello world") == ("T", "stdout", True, b"hello world")
    assert parse_record(b"T stderr P ") == ("T", "stderr", False, b"")
    assert parse_record(b"T stderr F") == ("T", "stderr", True, b"")
    assert parse_record(b"garbage") is None
    assert rfc3339_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"


async def test_tail_counts_logical_lines_across_blocks(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    records = [rec(i % 60, "stdout", "F", f"line{i}" + "x" * 300) for i in range(600)]
    log.write_bytes(b"".join(records))  # ~190 KB: several 64 KiB blocks
    assert tail_span(log, -1) == (0, 0)
    assert tail_span(log, 0) == (log.stat().st_size, log.stat().st_size)
    assert tail_span(log, 10_000) == (0, 0)
    lines = await collect(log, tail=3)
    assert [line[:7] for _, line in lines] == [b"line597", b"line598", b"line599"]
    assert len(await collect(log, tail=250)) == 250
    assert len(await collect(log)) == 600
    assert tail_span(tmp_path / "missing.log", 5) == (0, 0)
    assert await collect(tmp_path / "missing.log") == []


async def test_partial_records_are_joined_per_stream(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_bytes(
        rec(1, "stdout", "F", "first")
        + rec(2, "stdout", "P", "aaa")
        + rec(3, "stderr", "F", "err")
        + rec(4, "stdout", "P", "bbb")
        + rec(5, "stdout", "F", "ccc")
        + rec(6, "stdout", "F", "last")
    )
    assert await collect(log) == [
        ("stdout", b"first"),
        ("stderr", b"err"),
        ("stdout", b"aaabbbccc"),
        ("stdout", b"last"),
    ]
    # tail counts a joined line once, and finds its parts before an unselected line
    assert await collect(log, tail=2) == [("stdout", b"aaabbbccc"), ("stdout", b"last")]
    assert await collect(log, tail=3) == [
        ("stderr", b"err"),
        ("stdout", b"aaabbbccc"),
        ("stdout", b"last"),
    ]
    assert await collect(log, tail=1) == [("stdout", b"last")]


async def test_follow_reads_new_lines_until_ended_and_drained(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_bytes(rec(0, "stdout", "F", "old"))
    ended = asyncio.Event()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def reader() -> None:
        async for line in read_log(log, tail=-1, follow=True, ended=ended.is_set, interval=0.01):
            got.put_nowait(line.line)

    task = asyncio.create_task(reader())
    async with asyncio.timeout(10):
        assert await got.get() == b"old"
        with log.open("ab") as f:
            f.write(rec(1, "stdout", "F", "new"))
        assert await got.get() == b"new"
        assert not task.done()  # still following
        with log.open("ab") as f:  # written just before the end: still delivered
            f.write(rec(2, "stderr", "F", "bye"))
        ended.set()
        await task
    assert got.get_nowait() == b"bye"
    assert got.empty()


async def test_follow_can_be_cancelled(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_bytes(b"")
    task = asyncio.create_task(collect(log, follow=True, ended=lambda: False, interval=0.01))
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert task.cancelled()
