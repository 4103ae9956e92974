"""A DNS flooder for the resolver's abuse tests: UDP datagrams at a fixed rate for a
bounded time, of junk (random bytes, truncated headers, responses) and of recursive
names (random labels under example.com, the kind an open resolver would forward), from
one socket. Replies are not read (a flooder does not care); the number sent is printed.

    python tests/dnsflood.py HOST PORT [--rate 10000] [--seconds 5] [--kind junk,recursive]

Run as a process of its own so that its sending does not share the tested loop or GIL.
"""

from __future__ import annotations

import argparse
import itertools
import random
import socket
import time

from dnslib import DNSRecord

POOL = 2048
"""Distinct packets per kind, made before the flood starts and sent in turn."""


def junk(rng: random.Random) -> bytes:
    shape = rng.randrange(4)
    if shape == 0:
        return rng.randbytes(rng.randrange(12))  # shorter than a header
    if shape == 1:
        return rng.randbytes(rng.randrange(12, 300))  # noise
    header = bytearray(rng.randbytes(12))
    if shape == 2:
        header[2] |= 0x80  # a response: never to be answered
    else:
        header[4:6] = b"\x00\x01"  # one question, whose name runs past the packet
        header[2] &= 0x07
        return bytes(header) + bytes([63]) + rng.randbytes(rng.randrange(40))
    return bytes(header) + rng.randbytes(rng.randrange(64))


def recursive(rng: random.Random) -> bytes:
    label = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=12))
    q = DNSRecord.question(f"{label}.example.com")
    q.header.id = rng.randrange(0x10000)
    return q.pack()


MAKERS = {"junk": junk, "recursive": recursive}


def packets(kinds: list[str], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    made = [[MAKERS[k](rng) for _ in range(POOL)] for k in kinds]
    return [p for group in zip(*made, strict=True) for p in group]  # kinds interleaved


def flood(host: str, port: int, rate: float, seconds: float, kinds: list[str]) -> int:
    """Send ``rate`` datagrams a second for ``seconds``; how many were sent."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sent = 0
    stream = itertools.cycle(packets(kinds, seed=port))
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        start = time.monotonic()
        end = start + seconds
        while (now := time.monotonic()) < end:
            due = int((now - start) * rate)
            while sent < due:
                try:
                    sock.sendto(next(stream), (host, port))
                except (BlockingIOError, ConnectionRefusedError):
                    pass  # a full buffer or an ICMP error: the flood goes on
                sent += 1
            time.sleep(0.001)
    return sent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--rate", type=float, default=10_000)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--kind", default="junk,recursive")
    args = p.parse_args()
    kinds = args.kind.split(",")
    print(flood(args.host, args.port, args.rate, args.seconds, kinds), flush=True)


if __name__ == "__main__":
    main()
