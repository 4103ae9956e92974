"""The agent's service discovery DNS server: one resolver inside every container, one for
the node, answering from the records the dispatcher pushes (dnsnames.py).

Who asks: like Docker's embedded DNS, every container gets a UDP and a TCP socket bound
to 127.0.0.11:53 *inside its own network namespace* (made on a short-lived thread that
setns'es into it; a socket stays in the netns it was made in) and a resolv.conf naming
that address. The socket a query arrives on says which container asks, hence which
networks it may see: no address-based guessing, and overlapping subnets are no problem.
Host-network containers get the host's resolv.conf instead. The node's own listener
(``DnsSettings.host_listen``, by default 127.0.0.1:53) answers as if the asker were on
every network the node has records for: for operators and `dig` on the host.

Answers: cluster names from the record table (A records, TTL ``ttl``; AAAA and other types
for our names get an empty NOERROR answer, as Docker does, so clients fall back to A);
NXDOMAIN for cluster names the asker cannot reach; every other name is forwarded to the
upstream resolvers (the host's resolv.conf, read once at agent start) over the same
transport, each attempt with a share of ``forward_timeout``, and SERVFAIL when none
answers (or there are none). Forwarding is for the node's own askers only: a container
(its socket) or, at the node listener, a source that is loopback or the listener's own
address; anyone else gets REFUSED for a name that is not the cluster's, so the node
listener is never an open resolver (an amplifier) even when bound to a routed address.
Replies of our own are built by dnswire.py; forwarded ones come back through
dnsforward.py (pooled sockets, random ids, replies checked).

Limits (dnslimits.py): every listener rate-limits per source address (a token bucket,
``rate``/``burst``, in a table of at most ``max_sources``); a forward holds a slot of
``max_forwards`` (and ``max_forwards_per_source``); a TCP session one of
``max_tcp_sessions`` (and ``max_tcp_sessions_per_listener``). What is over a limit is
dropped (UDP), refused (TCP), and counted in ``stats``; nothing waits in a queue. So the
sockets DNS may hold are bounded: ``fd_budget``.

Threading: the resolver runs on its own thread with its own event loop. A flood (junk,
recursive names, at any rate) costs that thread's time, not the agent's loop, where the
session's heartbeats run; the two share only the GIL, which Python hands over every 5 ms.
The record table is the one thing both touch: ``apply`` (agent loop) and the lookups
(resolver loop) take ``_lock``. The public methods are called from the agent's loop and
hand socket work over to the resolver's. The fast path (rate check, parse, look up,
encode, send) runs synchronously in the datagram callback: no task per query; only
forwarding creates one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import resource
import socket
import struct
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orch import model
from orch.agent import dnswire
from orch.agent.dnsforward import Forwarder
from orch.agent.dnslimits import InFlight, RateLimiter
from orch.agent.dnsnames import Outcome, RecordTable, Rotator, resolve
from orch.errors import NetworkError
from orch.overlay.netns import enter_fd, run_in_netns
from orch.proto import dispatcher_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

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
    """Seconds a TCP connection may sit idle between queries (or stall a reply) before we
    close it."""
    rate: float = 2000.0
    """Queries per second each source address may send to one listener (after
    ``burst``); a container's resolver is one source. musl asks A and AAAA per lookup, so
    this is ~1,000 lookups/s, more than a client without a cache needs."""
    burst: float = 2000.0
    """Queries a source may send at once before ``rate`` applies."""
    max_sources: int = 4096
    """Sources whose buckets a listener keeps (the least recently seen goes first)."""
    max_forwards: int = 256
    """Forwarded queries in flight at once, all listeners together (each holds a task,
    and a TCP one a socket)."""
    max_forwards_per_source: int = 32
    """Forwarded queries in flight at once for one source of one listener."""
    max_tcp_sessions: int = 64
    """TCP sessions open at once, all listeners together (each holds a socket)."""
    max_tcp_sessions_per_listener: int = 16
    """TCP sessions open at once on one listener."""
    upstream_sockets: int = 4
    """UDP sockets per upstream resolver, reused by forwarded queries."""
    upstream_socket_queries: int = 1000
    """Queries one upstream socket carries before it is replaced (a new source port)."""

    def __post_init__(self) -> None:
        for name in (
            "rate", "burst", "max_sources", "max_forwards", "max_forwards_per_source",
            "max_tcp_sessions", "max_tcp_sessions_per_listener", "upstream_sockets",
            "upstream_socket_queries",
        ):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"DNS setting {name}: {getattr(self, name)} is not positive")
        if self.burst < 1:
            raise ValueError(f"DNS setting burst: {self.burst} is less than one query")

    def fd_budget(self, listeners: int) -> int:
        """The most fds the resolver may hold with ``listeners`` listeners open: their
        sockets (UDP and TCP each), TCP sessions, pooled upstream sockets, and one per
        forward in flight (a TCP forward's connection, or a retired UDP socket still
        waiting for its last reply)."""
        return (
            2 * listeners
            + self.max_tcp_sessions
            + self.upstream_sockets * len(self.upstreams)
            + self.max_forwards
        )


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
    """Answers queries from the record table; owns every listening socket and the
    resolver's thread. Its public methods are called from the agent's event loop."""

    def __init__(self, settings: DnsSettings | None = None) -> None:
        self.settings = s = settings or DnsSettings()
        self.table = RecordTable()
        self._lock = threading.Lock()
        """Guards ``table``: written on the agent's loop, read on the resolver's."""
        self._rotator = Rotator()
        self._upstreams = [split_host_port(u) for u in s.upstreams]
        self._forwarder = Forwarder(
            self._upstreams,
            pool_size=s.upstream_sockets,
            socket_queries=s.upstream_socket_queries,
        )
        self._forwards = InFlight(total=s.max_forwards, per_key=s.max_forwards_per_source)
        self._tcp = InFlight(total=s.max_tcp_sessions, per_key=s.max_tcp_sessions_per_listener)
        self._containers: dict[str, _Listener] = {}
        self._host: _Listener | None = None
        self._jobs: set[asyncio.Task] = set()
        self._thread: _LoopThread | None = None
        self.stats = dict.fromkeys(
            (
                "answered", "nxdomain", "forwarded", "servfail", "refused", "malformed",
                "rate_limited", "forwards_over_cap", "tcp_over_cap",
            ),
            0,
        )  # fmt: skip
        """Counters, written on the resolver's thread (reads from elsewhere are fine)."""

    # -- records ---------------------------------------------------------------------

    def apply(self, msg: dispatcher_pb2.Assignments) -> None:
        """Follow one session message's DNS part; answered from the next query on."""
        with self._lock:
            if msg.full or msg.dns or msg.removed_dns:
                self.table.apply(msg.dns, msg.removed_dns, full=msg.full)
            if msg.HasField("dns_network_names"):
                self.table.set_cluster_networks(msg.dns_network_names.names)

    # -- listeners -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the resolver's thread and open the node's own listener, if configured. A
        port that cannot be bound is logged, not fatal: containers still get resolvers."""
        await self._on_resolver(_noop())
        check_fd_budget(self.settings)
        if not self.settings.host_listen:
            return
        host, port = split_host_port(self.settings.host_listen)
        try:
            udp, tcp = _bind_pair(host, port)
        except OSError as exc:
            log.error("DNS: cannot listen on %s: %s", self.settings.host_listen, exc)
            return
        self._host = await self._on_resolver(self._serve(udp, tcp, None, own_address=host))
        log.info("DNS: answering on %s (every network of this node)", self.settings.host_listen)

    async def attach(self, endpoint_id: str, netns_path: str, networks: Sequence[str]) -> None:
        """Serve the container ``endpoint_id``: a resolver at 127.0.0.11 inside its netns,
        answering for ``networks`` (its networks in order). Idempotent: a second call only
        updates the networks. NetworkError if the sockets cannot be made."""
        asker = [n.lower() for n in networks if n not in (model.HOST, model.NONE)]
        current = self._containers.get(endpoint_id)
        if current is not None:
            current.asker = asker  # one reference swap: the resolver sees the old or the new
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
        self._containers[endpoint_id] = await self._on_resolver(self._serve(udp, tcp, asker))

    async def detach(self, endpoint_id: str) -> None:
        """Stop serving the container ``endpoint_id``. Safe to call twice."""
        listener = self._containers.pop(endpoint_id, None)
        if listener is not None:
            await self._on_resolver(listener.close())

    def attached(self) -> list[str]:
        return sorted(self._containers)

    def open_fds(self) -> int:
        """Sockets the resolver holds now (listeners, TCP sessions, upstream sockets)."""
        listeners = [*self._containers.values(), *([self._host] if self._host else [])]
        return 2 * len(listeners) + len(self._tcp) + self._forwarder.sockets()

    async def close(self) -> None:
        """Close every socket and stop the resolver's thread. Safe to call twice."""
        if self._thread is None:
            return
        for endpoint_id in list(self._containers):
            await self.detach(endpoint_id)
        host, self._host = self._host, None
        await self._on_resolver(self._shut(host))
        thread, self._thread = self._thread, None
        await thread.stop()

    async def _shut(self, host: _Listener | None) -> None:
        if host is not None:
            await host.close()
        self._forwarder.close()
        # Forwards and TCP sessions still running: cancelled, so the loop stops empty.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _on_resolver(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the resolver's loop (its thread started on first use)."""
        if self._thread is None:
            self._thread = _LoopThread("orch-dns")
        return await self._thread.run(coro)

    async def _serve(
        self, udp: socket.socket, tcp: socket.socket, asker: Asker, own_address: str = ""
    ) -> _Listener:
        loop = asyncio.get_running_loop()
        s = self.settings
        holder = _Listener(
            asker,
            RateLimiter(rate=s.rate, burst=s.burst, max_keys=s.max_sources),
            own_address=own_address,
        )
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

    # -- answering (on the resolver's loop) -------------------------------------------

    def answer_local(
        self, data: bytes, asker: Asker, max_size: int | None
    ) -> tuple[bytes | None, dnswire.Query | None]:
        """(reply, None) when we can answer at once, (None, query) when ``query`` must be
        forwarded, (None, None) when the packet is not to be answered."""
        try:
            query = dnswire.parse_query(data)
        except dnswire.WireError:
            self.stats["malformed"] += 1
            return dnswire.error_reply(data, dnswire.FORMERR), None
        if query.opcode != 0:
            return dnswire.reply(query, rcode=dnswire.NOTIMP, max_size=None), None
        limit = None if max_size is None else dnswire.udp_limit(query, max_size)
        if query.qclass != dnswire.CLASS_IN:
            return None, query
        with self._lock:
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

    def refuse(self, query: dnswire.Query, max_size: int | None) -> bytes:
        """REFUSED: a name we do not serve to this asker, or a limit reached."""
        self.stats["refused"] += 1
        limit = None if max_size is None else dnswire.udp_limit(query, max_size)
        return dnswire.reply(query, rcode=dnswire.REFUSED, authoritative=False, max_size=limit)

    async def forward(self, data: bytes, query: dnswire.Query, *, tcp: bool) -> bytes:
        """The upstream's reply to ``data``, or SERVFAIL when none answers in time."""
        self.stats["forwarded"] += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.forward_timeout
        for i, upstream in enumerate(self._upstreams):
            share = (deadline - loop.time()) / (len(self._upstreams) - i)
            if share <= 0:
                break
            try:
                async with asyncio.timeout(share):
                    if tcp:
                        return await self._forwarder.ask_tcp(upstream, data)
                    return await self._forwarder.ask_udp(upstream, query, data)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("DNS: upstream %s:%d: %r", *upstream, exc)
        self.stats["servfail"] += 1
        return dnswire.reply(query, rcode=dnswire.SERVFAIL, authoritative=False, max_size=None)

    def udp_query(self, holder: _Listener, data: bytes, addr: tuple) -> None:
        """One datagram: rate check, then answered, refused, forwarded or dropped."""
        source = addr[0]
        if not holder.limiter.allow(source, time.monotonic()):
            self.stats["rate_limited"] += 1
            return
        max_udp = self.settings.max_udp
        reply, query = self.answer_local(data, holder.asker, max_udp)
        if query is not None:
            if not holder.may_forward(source):
                reply = self.refuse(query, max_udp)
            elif not self._forwards.acquire((id(holder), source)):
                self.stats["forwards_over_cap"] += 1
                return
            else:
                self._spawn(self._forward_udp(holder, data, query, addr))
                return
        if reply is not None and holder.udp is not None:
            holder.udp.sendto(reply, addr)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.ensure_future(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _forward_udp(
        self, holder: _Listener, data: bytes, query: dnswire.Query, addr: tuple
    ) -> None:
        try:
            reply = await self.forward(data, query, tcp=False)
        finally:
            self._forwards.release((id(holder), addr[0]))
        if holder.udp is not None and not holder.udp.is_closing():
            holder.udp.sendto(reply, addr)

    async def _tcp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, holder: _Listener
    ) -> None:
        """Length-prefixed queries (RFC 1035 4.2.2) until the asker closes or idles; a
        session over the caps is closed at once."""
        if not self._tcp.acquire(id(holder)):
            self.stats["tcp_over_cap"] += 1
            writer.transport.abort()
            return
        holder.sessions.add(writer)
        source = (writer.get_extra_info("peername") or ("",))[0]
        try:
            while True:
                async with asyncio.timeout(self.settings.tcp_idle):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    data = await reader.readexactly(size)
                reply = await self._tcp_reply(holder, source, data)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                async with asyncio.timeout(self.settings.tcp_idle):
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp.release(id(holder))
            holder.sessions.discard(writer)
            writer.transport.abort()

    async def _tcp_reply(self, holder: _Listener, source: str, data: bytes) -> bytes | None:
        if not holder.limiter.allow(source, time.monotonic()):
            self.stats["rate_limited"] += 1
            return dnswire.error_reply(data, dnswire.REFUSED)
        reply, query = self.answer_local(data, holder.asker, None)
        if query is None:
            return reply
        if not holder.may_forward(source):
            return self.refuse(query, None)
        key = (id(holder), source)
        if not self._forwards.acquire(key):
            self.stats["forwards_over_cap"] += 1
            return self.refuse(query, None)
        try:
            return await self.forward(data, query, tcp=True)
        finally:
            self._forwards.release(key)


FD_HEADROOM = 8
"""The resolver's fd budget (with 100 containers) must fit this many times in the
process's soft RLIMIT_NOFILE: the rest is the agent's (gRPC, logs, runc pipes)."""


def check_fd_budget(settings: DnsSettings, containers: int = 100) -> bool:
    """Whether the resolver's worst case leaves the agent room under its fd limit; a
    warning when not (a soft limit the agent could not raise)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    budget = settings.fd_budget(listeners=containers + 1)
    if soft != resource.RLIM_INFINITY and budget * FD_HEADROOM > soft:
        log.warning(
            "DNS may hold %d fds with %d containers, too near the open-file limit %d",
            budget,
            containers,
            soft,
        )
        return False
    return True


async def _noop() -> None:
    pass


class _LoopThread:
    """An event loop of its own on a daemon thread; ``run`` hands it a coroutine."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join)


class _Listener:
    """One resolver's sockets, whom it answers for, and its askers' rate buckets. Made
    and used on the resolver's loop."""

    def __init__(self, asker: Asker, limiter: RateLimiter, *, own_address: str = "") -> None:
        self.asker = asker
        self.limiter = limiter
        self.own_address = own_address
        """The node listener's address ("" for a container's): queries from it, or from
        loopback, come from this host."""
        self.udp: asyncio.DatagramTransport | None = None
        self.udp_closed = asyncio.get_running_loop().create_future()
        """Done once the UDP socket is really closed: a transport closes it a loop turn
        after close(), and detach must not return before (ss, a netns deletion)."""
        self.tcp: asyncio.Server | None = None
        self.sessions: set[asyncio.StreamWriter] = set()

    def may_forward(self, source: str) -> bool:
        """Whether a query from ``source`` may be forwarded upstream: always for a
        container (its own socket), else only from this host."""
        if self.asker is not None:
            return True
        if source == self.own_address:
            return True
        try:
            return ipaddress.ip_address(source.split("%")[0]).is_loopback
        except ValueError:
            return False

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
        self._server.udp_query(self._holder, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS: UDP error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._holder.udp_closed.done():
            self._holder.udp_closed.set_result(None)


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


NODE_LISTEN = "127.0.0.1:53"
"""The node listener's default address."""


def node_settings(
    *,
    listen: str | None,
    upstreams: list[str] | None,
    host_resolv_conf: str,
    rate: float = DnsSettings.rate,
) -> DnsSettings:
    """The agent's DNS settings from its flags: ``listen`` None = ``NODE_LISTEN``
    (loopback: reaching the node listener from elsewhere is a choice, made with the
    flag), "" = none; ``upstreams`` None = the host's nameservers, minus our own
    listener; ``rate`` per source, with a burst of one second's worth."""
    if listen is None:
        listen = NODE_LISTEN
    if upstreams is None:
        own = [split_host_port(listen)[0]] if listen else []
        upstreams = parse_upstreams(host_resolv_conf, exclude=own)
    return DnsSettings(host_listen=listen, upstreams=upstreams, rate=rate, burst=rate)
