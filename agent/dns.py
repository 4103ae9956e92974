"""The agent's service discovery DNS server: one resolver inside every container, one for
the node, answering from the records the dispatcher pushes (dnsnames.py).

Who asks: like Docker's embedded DNS, every container gets a UDP and a TCP socket bound
to 127.0.0.11:53 *inside its own network namespace* (made on a short-lived thread that
setns'es into it; a socket stays in the netns it was made in) and a resolv.conf naming
that address. All these sockets are served by the agent's one event loop, and the socket
a query arrives on says which container asks, hence which networks it may see: no
address-based guessing, and overlapping subnets are no problem. Host-network containers
get the host's resolv.conf instead. The node's own listener (``DnsSettings.host_listen``,
by default the advertise address, port 53) answers as if the asker were on every network
the node has records for: for operators and `dig` on the host.

Answers: cluster names from the record table (A records, TTL ``ttl``; AAAA and other types
for our names get an empty NOERROR answer, as Docker does, so clients fall back to A);
NXDOMAIN for cluster names the asker cannot reach; every other name is forwarded to the
upstream resolvers (the host's resolv.conf, read once at agent start) over the same
transport, each attempt with a share of ``forward_timeout``, and SERVFAIL when none
answers (or there are none). Replies of our own are built by dnswire.py; forwarded ones
are passed back untouched.

The fast path (parse, look up, encode, send) runs synchronously in the datagram callback:
no task per query. Only forwarding creates a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from orch import model
from orch.agent import dnswire
from orch.agent.dnsnames import Outcome, RecordTable, Rotator, resolve
from orch.errors import NetworkError
from orch.overlay.netns import enter_fd, run_in_netns
from orch.proto import dispatcher_pb2

log = logging.getLogger(__name__)

CONTAINER_ADDRESS = "127.0.0.11"
"""Where a container finds its resolver (Docker's choice: loopback, so always routable)."""

CONTAINER_RESOLV_CONF = f"nameserver {CONTAINER_ADDRESS}\noptions ndots:0\n"
"""The resolv.conf of every container with a netns of its own."""


@dataclass
class DnsSettings:
    ttl: int = 1
    """TTL (seconds) of our answers: short, so a client that caches still follows the
    cluster within a second."""
    upstreams: list[str] = field(default_factory=list)
    """Resolvers for names that are not the cluster's ("ip" or "ip:port"); empty: answer
    SERVFAIL for those."""
    forward_timeout: float = 2.0
    """Seconds a forwarded query may take in all (shared among the upstreams in turn)."""
    host_listen: str = ""
    """"ip:port" of the node's own listener (every network of the node); "" = none."""
    container_port: int = 53
    """The port of the per-container resolver at 127.0.0.11."""
    max_udp: int = dnswire.EDNS_SIZE
    """Largest UDP reply we send to an EDNS asker (the DNS flag day 2020 value)."""
    tcp_idle: float = 10.0
    """Seconds a TCP connection may sit idle between queries before we close it."""


def parse_upstreams(resolv_conf: str, *, exclude: Sequence[str] = ()) -> list[str]:
    """The nameserver addresses of a resolv.conf text, minus ``exclude`` (our own listener,
    which would forward to itself)."""
    found = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = str(ipaddress.ip_address(parts[1].split("%")[0]))
            except ValueError:
                continue
            if address not in exclude and address != CONTAINER_ADDRESS:
                found.append(address)
    return found


def split_host_port(text: str, default_port: int = 53) -> tuple[str, int]:
    """ "ip", "ip:port" or "[v6]:port" -> (ip, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


Asker = list[str] | None
"""The networks of the asker in its interface order; None = every network of the node."""


class DnsServer:
    """Answers queries from the record table; owns every listening socket."""

    def __init__(self, settings: DnsSettings | None = None) -> None:
        self.settings = settings or DnsSettings()
        self.table = RecordTable()
        self._rotator = Rotator()
        self._upstreams = [split_host_port(u) for u in self.settings.upstreams]
        self._containers: dict[str, _Listener] = {}
        self._host: _Listener | None = None
        self._jobs: set[asyncio.Task] = set()
        self.stats = {"answered": 0, "nxdomain": 0, "forwarded": 0, "servfail": 0}

    # -- records ---------------------------------------------------------------------

    def apply(self, msg: dispatcher_pb2.Assignments) -> None:
        """Follow one session message's DNS part."""
        if msg.full or msg.dns or msg.removed_dns:
            self.table.apply(msg.dns, msg.removed_dns, full=msg.full)
        if msg.HasField("dns_network_names"):
            self.table.set_cluster_networks(msg.dns_network_names.names)

    # -- listeners -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the node's own listener, if configured. A port that cannot be bound is
        logged, not fatal: containers still get their resolvers."""
        if not self.settings.host_listen:
            return
        host, port = split_host_port(self.settings.host_listen)
        try:
            udp, tcp = _bind_pair(host, port)
        except OSError as exc:
            log.error("DNS: cannot listen on %s: %s", self.settings.host_listen, exc)
            return
        self._host = await self._serve(udp, tcp, None)
        log.info("DNS: answering on %s (every network of this node)", self.settings.host_listen)

    async def attach(self, endpoint_id: str, netns_path: str, networks: Sequence[str]) -> None:
        """Serve the container ``endpoint_id``: a resolver at 127.0.0.11 inside its netns,
        answering for ``networks`` (its networks in order). Idempotent: a second call only
        updates the networks. NetworkError if the sockets cannot be made."""
        asker = [n.lower() for n in networks if n not in (model.HOST, model.NONE)]
        current = self._containers.get(endpoint_id)
        if current is not None:
            current.asker[:] = asker
            return
        port = self.settings.container_port
        try:
            udp, tcp = await run_in_netns(None, lambda: _bind_in(netns_path, port))
        except OSError as exc:
            raise NetworkError(f"DNS resolver in {netns_path}: {exc}") from exc
        if endpoint_id in self._containers:  # a concurrent attach won
            udp.close()
            tcp.close()
            return
        self._containers[endpoint_id] = await self._serve(udp, tcp, asker)

    async def detach(self, endpoint_id: str) -> None:
        """Stop serving the container ``endpoint_id``. Safe to call twice."""
        listener = self._containers.pop(endpoint_id, None)
        if listener is not None:
            await listener.close()

    def attached(self) -> list[str]:
        return sorted(self._containers)

    async def close(self) -> None:
        for endpoint_id in list(self._containers):
            await self.detach(endpoint_id)
        if self._host is not None:
            await self._host.close()
            self._host = None
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    async def _serve(self, udp: socket.socket, tcp: socket.socket, asker: Asker) -> _Listener:
        loop = asyncio.get_running_loop()
        holder = _Listener(asker)
        try:
            holder.udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, holder), sock=udp
            )
            holder.tcp = await asyncio.start_server(
                lambda r, w: self._tcp_session(r, w, holder), sock=tcp
            )
        except BaseException:
            await holder.close()
            udp.close()
            tcp.close()
            raise
        return holder

    # -- answering -------------------------------------------------------------------

    def answer_local(
        self, data: bytes, asker: Asker, max_size: int | None
    ) -> tuple[bytes | None, dnswire.Query | None]:
        """(reply, None) when we can answer at once, (None, query) when ``query`` must be
        forwarded, (None, None) when the packet is not to be answered."""
        try:
            query = dnswire.parse_query(data)
        except dnswire.WireError:
            return dnswire.error_reply(data, dnswire.FORMERR), None
        if query.opcode != 0:
            return dnswire.reply(query, rcode=dnswire.NOTIMP, max_size=None), None
        limit = None if max_size is None else dnswire.udp_limit(query, max_size)
        if query.qclass != dnswire.CLASS_IN:
            return None, query
        result = resolve(self.table, asker, query.name)
        if result.outcome is Outcome.FORWARD:
            return None, query
        if result.outcome is Outcome.NXDOMAIN:
            self.stats["nxdomain"] += 1
            return dnswire.reply(query, rcode=dnswire.NXDOMAIN, max_size=limit), None
        self.stats["answered"] += 1
        addresses: tuple[str, ...] = ()
        if query.qtype in (dnswire.TYPE_A, dnswire.TYPE_ANY):
            addresses = self._rotator.rotate(result.key, result.addresses)
        return dnswire.reply(
            query, addresses=addresses, ttl=self.settings.ttl, max_size=limit
        ), None

    async def forward(self, data: bytes, query: dnswire.Query, *, tcp: bool) -> bytes:
        """The upstream's reply to ``data``, or SERVFAIL when none answers in time."""
        self.stats["forwarded"] += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.forward_timeout
        for i, (host, port) in enumerate(self._upstreams):
            share = (deadline - loop.time()) / (len(self._upstreams) - i)
            if share <= 0:
                break
            try:
                async with asyncio.timeout(share):
                    if tcp:
                        got = await _ask_tcp(host, port, data)
                    else:
                        got = await _ask_udp(host, port, data)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("DNS: upstream %s:%d: %r", host, port, exc)
                continue
            if got[:2] == data[:2]:
                return got
        self.stats["servfail"] += 1
        return dnswire.reply(query, rcode=dnswire.SERVFAIL, authoritative=False, max_size=None)

    def _spawn(self, coro) -> None:
        job = asyncio.ensure_future(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _forward_udp(
        self, holder: _Listener, data: bytes, query: dnswire.Query, addr: tuple
    ) -> None:
        reply = await self.forward(data, query, tcp=False)
        if holder.udp is not None and not holder.udp.is_closing():
            holder.udp.sendto(reply, addr)

    async def _tcp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, holder: _Listener
    ) -> None:
        """Length-prefixed queries (RFC 1035 4.2.2) until the asker closes or idles."""
        holder.sessions.add(writer)
        try:
            while True:
                async with asyncio.timeout(self.settings.tcp_idle):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    data = await reader.readexactly(size)
                reply, query = self.answer_local(data, holder.asker, None)
                if query is not None:
                    reply = await self.forward(data, query, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            holder.sessions.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Listener:
    """One resolver's sockets and whom it answers for."""

    def __init__(self, asker: Asker) -> None:
        self.asker = asker
        self.udp: asyncio.DatagramTransport | None = None
        self.udp_closed = asyncio.get_running_loop().create_future()
        """Done once the UDP socket is really closed: a transport closes it a loop turn
        after close(), and detach must not return before (ss, a netns deletion)."""
        self.tcp: asyncio.Server | None = None
        self.sessions: set[asyncio.StreamWriter] = set()

    async def close(self) -> None:
        """Close every socket, open TCP sessions too: a socket left open would keep the
        container's netns (and its veth) alive after the netns is deleted."""
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
        for writer in list(self.sessions):
            writer.transport.abort()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                if self.udp is not None:
                    await asyncio.shield(self.udp_closed)
                if self.tcp is not None:
                    await self.tcp.wait_closed()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, holder: _Listener) -> None:
        self._server = server
        self._holder = holder

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        server = self._server
        reply, query = server.answer_local(data, self._holder.asker, server.settings.max_udp)
        if reply is not None and self._holder.udp is not None:
            self._holder.udp.sendto(reply, addr)
        elif query is not None:
            server._spawn(server._forward_udp(self._holder, data, query, addr))

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS: UDP error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._holder.udp_closed.done():
            self._holder.udp_closed.set_result(None)


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)  # ICMP unreachable: no waiting for the timeout

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc or ConnectionError("closed"))


async def _ask_udp(host: str, port: int, data: bytes) -> bytes:
    """One query over a fresh connected UDP socket (a random source port per query)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_OneReply, remote_addr=(host, port))
    try:
        transport.sendto(data)
        return await proto.reply
    finally:
        transport.close()


async def _ask_tcp(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on host:port, non-blocking, in this thread's netns."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        for sock in (udp, tcp):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind((host, port))
        tcp.listen(64)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


def _bind_in(netns_path: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Runs on a throwaway thread: enter the container's netns, bind there."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_fd(fd, netns_path)
    finally:
        os.close(fd)
    return _bind_pair(CONTAINER_ADDRESS, port)


HOST_RESOLV_CONF = "/etc/resolv.conf"


def read_host_resolv_conf(path: str = HOST_RESOLV_CONF) -> str:
    """The host's resolv.conf (read once at agent start); "" if there is none."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def node_settings(
    *,
    advertise_addr: str,
    listen: str | None,
    upstreams: list[str] | None,
    host_resolv_conf: str,
) -> DnsSettings:
    """The agent's DNS settings from its flags: ``listen`` None = the advertise address,
    port 53 (no node listener without one), "" = none; ``upstreams`` None = the host's
    nameservers, minus our own listener."""
    if listen is None:
        listen = f"{advertise_addr}:53" if advertise_addr else ""
    if upstreams is None:
        own = [split_host_port(listen)[0]] if listen else []
        upstreams = parse_upstreams(host_resolv_conf, exclude=own)
    return DnsSettings(host_listen=listen, upstreams=upstreams)
