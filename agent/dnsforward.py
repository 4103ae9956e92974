"""Forwarding queries for names that are not the cluster's to the upstream resolvers, over
a bounded set of reused sockets.

Why a pool and not a socket per query: a socket (and a task) per forwarded query let a
flood of recursive names open as many fds as it could send queries. Here each upstream
has at most ``pool_size`` connected UDP sockets, each bound by the kernel to a random
source port and retired after ``socket_queries`` queries (so the ports keep moving; a
retired socket closes once its last query is settled). Every query sent gets a fresh
random 16-bit id, unique among the upstream's queries in flight; the reply is matched by
(upstream, id) on the socket the query went out of, must come from the upstream's address
and port and must carry the question asked, and only then gets the asker's id back. So a
forged reply has to guess the source port, the id and come from the right address: no
cache poisoning of the asker by a guessed id, and a stray reply settles nothing.

TCP forwards open one connection per query (the asker chose TCP for a large answer; they
are rare) and are bounded by the caller's in-flight caps like UDP ones.

``Pending`` is the pure part (ids, matching, restoring); ``Forwarder`` owns the sockets
and runs on the resolver's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from dataclasses import dataclass, field

from orch.agent import dnswire

_RANDOM = random.SystemRandom()
"""Ids from the OS's CSPRNG: a predictable id is half of a poisoning attack."""


@dataclass
class Sent:
    """One query in flight to an upstream."""

    original_id: int
    question: bytes
    """The question section as sent, to check the reply carries it."""
    via: object
    """The socket it went out of: a reply on another one is not its reply."""
    reply: asyncio.Future[bytes] | None = None


class Pending:
    """The queries in flight to one upstream, by the id we gave them."""

    def __init__(self, rng: random.Random = _RANDOM) -> None:
        self._rng = rng
        self._sent: dict[int, Sent] = {}

    def add(self, sent: Sent) -> int:
        """Register ``sent`` under a fresh random id not in flight; that id."""
        if len(self._sent) >= 0x10000:
            raise OverflowError("every query id of this upstream is in flight")
        while True:
            new_id = self._rng.getrandbits(16)
            if new_id not in self._sent:
                self._sent[new_id] = sent
                return new_id

    def remove(self, new_id: int) -> None:
        self._sent.pop(new_id, None)

    def match(self, reply: bytes, via: object) -> tuple[Sent, bytes] | None:
        """The query ``reply`` (arrived on ``via``) answers, and the reply with the asker's
        id restored; None if it answers none of ours (unknown id, another socket, not a
        response, another question)."""
        if len(reply) < dnswire.HEADER.size:
            return None
        new_id, flags, qdcount = struct.unpack_from("!HHH", reply)
        sent = self._sent.get(new_id)
        if sent is None or sent.via is not via or not flags & dnswire.QR or qdcount != 1:
            return None
        start = dnswire.HEADER.size
        end = start + len(sent.question)
        # The name compares case-insensitively (RFC 4343); type and class byte for byte.
        asked = reply[start:end]
        if asked[:-4].lower() != sent.question[:-4].lower() or asked[-4:] != sent.question[-4:]:
            return None
        return sent, struct.pack("!H", sent.original_id) + reply[2:]

    def on(self, via: object) -> list[int]:
        """The ids in flight on socket ``via``."""
        return [i for i, s in self._sent.items() if s.via is via]

    def get(self, new_id: int) -> Sent | None:
        return self._sent.get(new_id)

    def __len__(self) -> int:
        return len(self._sent)


@dataclass(eq=False)  # by identity: sockets live in sets
class _Socket:
    transport: asyncio.DatagramTransport | None = None
    uses: int = 0
    retired: bool = False
    in_flight: set[int] = field(default_factory=set)


class _UpstreamProtocol(asyncio.DatagramProtocol):
    def __init__(self, upstream: _Upstream, sock: _Socket) -> None:
        self._upstream = upstream
        self._sock = sock

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self._upstream.received(self._sock, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable on a connected socket: the upstream is not there; every query
        # on this socket fails now rather than at its timeout.
        self._upstream.failed(self._sock, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._upstream.failed(self._sock, exc or ConnectionError("upstream socket closed"))


class _Upstream:
    """The socket pool and the queries in flight of one upstream resolver."""

    def __init__(self, host: str, port: int, *, pool_size: int, socket_queries: int) -> None:
        self.host = host
        self.port = port
        self.pool_size = pool_size
        self.socket_queries = socket_queries
        self.pending = Pending()
        self.slots: list[_Socket | None] = [None] * pool_size
        self.retiring: set[_Socket] = set()
        self._opening = asyncio.Lock()

    def sockets(self) -> int:
        return sum(s is not None for s in self.slots) + len(self.retiring)

    async def ask(self, query: dnswire.Query, data: bytes) -> bytes:
        sock = await self._pick()
        loop = asyncio.get_running_loop()
        sent = Sent(query.id, query.question, sock, loop.create_future())
        new_id = self.pending.add(sent)
        sock.in_flight.add(new_id)
        sock.uses += 1
        if sock.uses >= self.socket_queries:
            self._retire(sock)
        try:
            assert sock.transport is not None
            sock.transport.sendto(struct.pack("!H", new_id) + data[2:])
            assert sent.reply is not None
            return await sent.reply
        finally:
            self.pending.remove(new_id)
            sock.in_flight.discard(new_id)
            if sock.retired and not sock.in_flight:
                self._close(sock)

    async def _pick(self) -> _Socket:
        i = _RANDOM.randrange(self.pool_size)
        sock = self.slots[i]
        if sock is not None:
            return sock
        async with self._opening:
            sock = self.slots[i]
            if sock is None:
                sock = _Socket()
                loop = asyncio.get_running_loop()
                # Connected: the kernel picks a random source port and delivers only
                # datagrams from the upstream's address and port.
                sock.transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UpstreamProtocol(self, sock), remote_addr=(self.host, self.port)
                )
                self.slots[i] = sock
            return sock

    def _retire(self, sock: _Socket) -> None:
        for i, s in enumerate(self.slots):
            if s is sock:
                self.slots[i] = None
        sock.retired = True
        self.retiring.add(sock)

    def _close(self, sock: _Socket) -> None:
        self.retiring.discard(sock)
        if sock.transport is not None:
            sock.transport.close()

    def received(self, sock: _Socket, data: bytes, addr: tuple) -> None:
        if addr[0] != self.host or addr[1] != self.port:
            return  # not from the upstream: never an answer
        found = self.pending.match(data, sock)
        if found is None:
            return
        sent, reply = found
        if sent.reply is not None and not sent.reply.done():
            sent.reply.set_result(reply)

    def failed(self, sock: _Socket, exc: Exception) -> None:
        for new_id in self.pending.on(sock):
            sent = self.pending.get(new_id)
            if sent is not None and sent.reply is not None and not sent.reply.done():
                sent.reply.set_exception(exc)
        if not sock.retired:
            self._retire(sock)  # a fresh socket for the next query
        if not sock.in_flight:
            self._close(sock)

    def close(self) -> None:
        for sock in [*self.slots, *self.retiring]:
            if sock is not None and sock.transport is not None:
                sock.transport.close()
        self.slots = [None] * self.pool_size
        self.retiring.clear()


class Forwarder:
    """Asks the upstream resolvers, over pooled UDP sockets or one TCP connection per
    query. Runs on one event loop (the resolver's)."""

    def __init__(
        self, upstreams: list[tuple[str, int]], *, pool_size: int, socket_queries: int
    ) -> None:
        self.upstreams = upstreams
        self._udp = {
            (h, p): _Upstream(h, p, pool_size=pool_size, socket_queries=socket_queries)
            for h, p in upstreams
        }

    async def ask_udp(self, upstream: tuple[str, int], query: dnswire.Query, data: bytes) -> bytes:
        """The upstream's reply to ``data`` (the asker's id restored). OSError when the
        upstream is unreachable; the caller bounds the wait."""
        return await self._udp[upstream].ask(query, data)

    @staticmethod
    async def ask_tcp(upstream: tuple[str, int], data: bytes) -> bytes:
        """One query over a fresh TCP connection; the reply must carry the query's id."""
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            writer.write(struct.pack("!H", len(data)) + data)
            await writer.drain()
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = await reader.readexactly(size)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if reply[:2] != data[:2]:
            raise ConnectionError("TCP reply with another id")
        return reply

    def sockets(self) -> int:
        """UDP sockets open now (pooled and retiring)."""
        return sum(u.sockets() for u in self._udp.values())

    def close(self) -> None:
        for upstream in self._udp.values():
            upstream.close()
