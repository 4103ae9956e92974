"""Read a container's CRI-format log file: the last N lines, then optionally follow.

The shim writes one record per line, ``<time> <stream> <F|P> <bytes>``; a line longer than
the shim's limit is a run of P records closed by an F record. Readers see logical lines:
P records are joined with their F record (per stream), and ``tail`` counts F records
(see tail_span for the interleaved-partials case).

Following uses a short poll of the file (RuntimeSettings.log_follow_interval) once the
reader has caught up: the shim appends with plain writes, inotify is not in the standard
library, and a 0.1 s poll on a file we already have open costs nothing measurable. It
stops when the container has ended and the file is drained, or when the caller cancels.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from orch.runtime.model import LogLine

_BLOCK = 1 << 16
_READ_MAX = 1 << 20
MAX_JOINED = 1 << 20
"""Bound on one logical line rebuilt from partial records (memory safety)."""


def parse_record(record: bytes) -> tuple[str, str, bool, bytes] | None:
    """(timestamp, stream, is_final, data) of one log record without its newline."""
    parts = record.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    data = parts[3] if len(parts) == 4 else b""
    return (
        parts[0].decode(errors="replace"),
        parts[1].decode(errors="replace"),
        parts[2] == b"F",
        data,
    )


def _records_backward(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(start offset, record without newline) from the end of the file to its start,
    reading 64 KiB blocks, so a long log costs only what is shown."""
    pos = f.seek(0, os.SEEK_END)
    data = b""  # file[pos : pos + len(data)], not yet scanned
    while True:
        idx = len(data)
        while idx > 0:
            nl = data.rfind(b"\n", 0, idx - 1)
            if nl < 0 and pos > 0:
                break  # this record starts in an earlier block
            yield pos + nl + 1, data[nl + 1 : idx].rstrip(b"\n")
            idx = nl + 1
        if pos == 0:
            return
        data = data[:idx]
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data


def tail_span(path: Path, n: int) -> tuple[int, int]:
    """Where to read from to show the last ``n`` logical lines: (start, cut).

    Lines from ``cut`` on are shown. Records in [start, cut) are only there for the
    partial (P) records that lines after ``cut`` began with: stdout and stderr records
    interleave, so a selected line's first parts may sit before an unselected line's end.
    (0, 0) shows everything."""
    if n < 0:
        return 0, 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return 0, 0
    with f:
        finals, cut, start = 0, -1, -1
        seen: set[str] = set()
        for offset, record in _records_backward(f):
            parsed = parse_record(record)
            if parsed is None:
                continue
            stream, final = parsed[1], parsed[2]
            if cut < 0:
                if final and finals == n:
                    cut = start = offset + len(record) + 1
                    seen.discard(stream)  # its F ends the previous (unselected) line
                    if not seen:
                        return start, cut
                    continue
                finals += final
                seen.add(stream)
            elif stream in seen:  # going back through a selected line's partial records
                if final:
                    seen.discard(stream)
                    if not seen:
                        break
                else:
                    start = offset
        return (start, cut) if cut >= 0 else (0, 0)


def _read_chunk(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(_READ_MAX)
    except FileNotFoundError:
        return b""


class _Assembler:
    """Turns complete records into logical lines, joining partials per stream."""

    def __init__(self) -> None:
        self.pending: dict[str, bytes] = {}

    def feed(self, record: bytes, shown: bool = True) -> LogLine | None:
        """The line this record completes, if any. Not ``shown`` records (before the tail
        cut) only contribute partial parts to later lines."""
        parsed = parse_record(record)
        if parsed is None:
            return None
        ts, stream, final, data = parsed
        joined = self.pending.pop(stream, b"") + data
        if not final and len(joined) < MAX_JOINED:
            self.pending[stream] = joined
            return None
        return LogLine(timestamp=ts, stream=stream, line=joined) if shown else None


async def read_log(
    path: Path,
    *,
    tail: int = -1,
    follow: bool = False,
    ended: Callable[[], bool] = lambda: True,
    interval: float = 0.1,
) -> AsyncIterator[LogLine]:
    """Yield the last ``tail`` lines (all when < 0), then with ``follow`` new ones until
    ``ended()`` is true and nothing is left to read."""
    offset, cut = await asyncio.to_thread(tail_span, path, tail)
    assembler = _Assembler()
    buf = b""
    draining = False
    while True:
        chunk = await asyncio.to_thread(_read_chunk, path, offset + len(buf))
        if chunk:
            buf += chunk
            *records, buf = buf.split(b"\n")
            for record in records:
                line = assembler.feed(record, shown=offset >= cut)
                offset += len(record) + 1
                if line is not None:
                    yield line
            continue
        if not follow or draining:
            return
        if ended():
            draining = True  # one more read: what was written before the end
            continue
        await asyncio.sleep(interval)
