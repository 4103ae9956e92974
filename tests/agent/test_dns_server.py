"""The agent's DNS server on real sockets: resolvers inside real network namespaces (as a
container's), asked by real clients (`dig` from bind9-dnsutils, busybox nslookup), over
UDP and TCP; forwarding to a real upstream on loopback; the node's own listener.

Every netns is made with the run's prefix and deleted afterwards, also on failure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from tests_support import fresh_netns_base

from orch.agent.dns import DnsServer, DnsSettings
from orch.overlay import netns as ns
from orch.proto import dispatcher_pb2

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("dig"), reason="needs root and dig"),
]


def endpoint(service: str, slot: int, address: str, ok: bool = True) -> dispatcher_pb2.DnsEndpoint:
    return dispatcher_pb2.DnsEndpoint(
        service=service, slot=slot, task_id=f"{service}{slot}", address=address, answerable=ok
    )


RECORDS = dispatcher_pb2.Assignments(
    full=True,
    dns=[
        dispatcher_pb2.DnsRecords(
            network="front",
            endpoints=[
                endpoint("web", 1, "10.10.0.2"),
                endpoint("web", 2, "10.10.0.3"),
                endpoint("web", 3, "10.10.0.4", ok=False),
            ],
        ),
        dispatcher_pb2.DnsRecords(network="back", endpoints=[endpoint("db", 1, "10.10.1.2")]),
    ],
)


@dataclass
class Answer:
    status: str
    addresses: list[str]
    took: float


async def dig(netns: str | None, *args: str, server: str = "127.0.0.11") -> Answer:
    """`dig @server args` inside ``netns`` (None: here); status and A records."""
    argv = ["dig", f"@{server}", "+tries=1", "+time=3", "+noall", "+comments", "+answer", *args]
    start = time.monotonic()
    rc, out, err = await ns.run_command(argv, netns=netns)
    took = time.monotonic() - start
    found = re.search(r"status: (\w+)", out)
    assert found, f"dig {' '.join(args)}: rc {rc}: {out} {err}"
    addresses = re.findall(r"\sIN\s+A\s+(\S+)", out)
    return Answer(found.group(1), addresses, took)


@dataclass
class Env:
    server: DnsServer
    front: str  # netns of a "container" on front
    back: str  # netns of a "container" on back


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    base = fresh_netns_base()
    server = DnsServer(DnsSettings(forward_timeout=0.5))
    server.apply(RECORDS)
    try:
        front, back = f"{base}c1", f"{base}c2"
        for name, nets in ((front, ["front"]), (back, ["back"])):
            path = await ns.create_netns(name)
            await server.attach(name, path, nets)
        yield Env(server, front, back)
    finally:
        await server.close()
        for name in ns.list_netns(base):
            await ns.delete_netns(name)


async def test_a_container_resolves_services_of_its_networks_only(env: Env) -> None:
    web = await dig(env.front, "web")
    assert web.status == "NOERROR"
    assert sorted(web.addresses) == ["10.10.0.2", "10.10.0.3"]  # 10.10.0.4 is not healthy
    assert (await dig(env.front, "tasks.web")).addresses != []
    assert (await dig(env.front, "web.3")).addresses == []
    assert (await dig(env.front, "WEB.2.front.")).addresses == ["10.10.0.3"]
    assert (await dig(env.front, "db")).status == "NXDOMAIN"
    assert (await dig(env.back, "db")).addresses == ["10.10.1.2"]
    assert (await dig(env.back, "web")).status == "NXDOMAIN"
    aaaa = await dig(env.front, "web", "AAAA")
    assert (aaaa.status, aaaa.addresses) == ("NOERROR", [])


async def test_answers_rotate_per_query(env: Env) -> None:
    firsts = {(await dig(env.front, "web")).addresses[0] for _ in range(4)}
    assert firsts == {"10.10.0.2", "10.10.0.3"}


async def test_tcp_answers_the_same(env: Env) -> None:
    got = await dig(env.front, "+tcp", "web")
    assert got.status == "NOERROR" and sorted(got.addresses) == ["10.10.0.2", "10.10.0.3"]
    assert (await dig(env.front, "+tcp", "db")).status == "NXDOMAIN"


async def test_record_updates_are_answered_at_once(env: Env) -> None:
    env.server.apply(
        dispatcher_pb2.Assignments(
            dns=[
                dispatcher_pb2.DnsRecords(
                    network="front", endpoints=[endpoint("web", 3, "10.10.0.4")]
                )
            ]
        )
    )
    assert (await dig(env.front, "web")).addresses == ["10.10.0.4"]
    env.server.apply(dispatcher_pb2.Assignments(removed_dns=["front"]))
    assert (await dig(env.front, "web")).status == "NXDOMAIN"


@pytest.mark.skipif(not shutil.which("busybox"), reason="needs busybox")
async def test_busybox_nslookup(env: Env) -> None:
    rc, out, err = await ns.run_command(
        ["busybox", "nslookup", "web", "127.0.0.11"], netns=env.front
    )
    assert rc == 0, out + err
    assert "10.10.0.2" in out and "10.10.0.3" in out and "10.10.0.4" not in out
    rc, out, _ = await ns.run_command(["busybox", "nslookup", "db", "127.0.0.11"], netns=env.front)
    assert rc != 0 and "NXDOMAIN" in out


async def test_other_names_get_servfail_at_once_without_upstreams(env: Env) -> None:
    got = await dig(env.front, "example.com")
    assert got.status == "SERVFAIL" and got.took < 1.0


async def test_detach_closes_the_resolver(env: Env) -> None:
    await env.server.detach(env.front)
    await env.server.detach(env.front)  # twice is fine
    rc, out, _ = await ns.run_command(["ss", "-Hlnu"], netns=env.front)
    assert rc == 0
    assert ":53" not in out
    assert env.server.attached() == [env.back]


# -- forwarding ----------------------------------------------------------------------


class Upstream(asyncio.DatagramProtocol):
    """A real DNS server on 127.0.0.1 (dnslib): example.com A 192.0.2.1, or silence."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    @staticmethod
    def answer(data: bytes) -> bytes:
        q = DNSRecord.parse(data)
        r = q.reply()
        r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("192.0.2.1"), ttl=30))
        return r.pack()

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.silent and self.transport is not None:
            self.transport.sendto(self.answer(data), addr)


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        reply = Upstream.answer(await reader.readexactly(size))
        writer.write(len(reply).to_bytes(2, "big") + reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(tcp, "127.0.0.1", port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def container() -> AsyncIterator[tuple[str, str]]:
    base = fresh_netns_base()
    name = f"{base}c1"
    try:
        yield name, await ns.create_netns(name)
    finally:
        await ns.delete_netns(name)


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_other_names_are_forwarded_over_udp_and_tcp(upstream: str, container) -> None:
    name, path = container
    # A refused upstream first: skipped at once (ICMP port unreachable), not waited for.
    server = DnsServer(
        DnsSettings(upstreams=[f"127.0.0.1:{closed_udp_port()}", upstream], forward_timeout=2)
    )
    try:
        await server.attach(name, path, ["front"])
        udp = await dig(name, "example.com")
        assert (udp.status, udp.addresses) == ("NOERROR", ["192.0.2.1"])
        tcp = await dig(name, "+tcp", "www.example.com")
        assert (tcp.status, tcp.addresses) == ("NOERROR", ["192.0.2.1"])
        assert (await dig(name, "web")).status == "NXDOMAIN"  # ours: not forwarded
        assert server.stats["forwarded"] == 2
    finally:
        await server.close()


async def test_a_silent_upstream_gives_servfail_after_the_timeout(container) -> None:
    name, path = container
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(
        lambda: Upstream(silent=True), local_addr=("127.0.0.1", 0)
    )
    port = silent.get_extra_info("sockname")[1]
    server = DnsServer(DnsSettings(upstreams=[f"127.0.0.1:{port}"], forward_timeout=0.5))
    try:
        await server.attach(name, path, ["front"])
        got = await dig(name, "example.com")
        assert got.status == "SERVFAIL" and 0.4 < got.took < 2.0
    finally:
        await server.close()
        silent.close()


# -- the node's own listener ---------------------------------------------------------


async def test_the_node_listener_answers_for_every_network_of_the_node() -> None:
    port = closed_udp_port()
    server = DnsServer(DnsSettings(host_listen=f"127.0.0.1:{port}"))
    server.apply(RECORDS)
    try:
        await server.start()
        got = await dig(None, "-p", str(port), "db", server="127.0.0.1")
        assert got.addresses == ["10.10.1.2"]
        got = await dig(None, "-p", str(port), "web.front", server="127.0.0.1")
        assert sorted(got.addresses) == ["10.10.0.2", "10.10.0.3"]
        got = await dig(None, "-p", str(port), "+tcp", "nosuch", server="127.0.0.1")
        assert got.status == "NXDOMAIN"
    finally:
        await server.close()


# -- abuse: rates, caps, forged replies, a flood ----------------------------------------

FLOODER = Path(__file__).resolve().parent.parent / "dnsflood.py"


def ask(port: int, name: str, qid: int = 4242, timeout: float = 2.0) -> DNSRecord | None:
    """One UDP query to 127.0.0.1:port with id ``qid``; the parsed reply or None."""
    q = DNSRecord.question(name)
    q.header.id = qid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q.pack(), ("127.0.0.1", port))
        try:
            return DNSRecord.parse(s.recv(4096))
        except TimeoutError:
            return None


class Forger(asyncio.DatagramProtocol):
    """An upstream that answers each query with forgeries first (another id, another
    question, from another port), then the true answer; it notes the ids and source
    ports it saw."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.other: asyncio.DatagramTransport | None = None  # the forger's second socket
        self.ids: list[int] = []
        self.ports: set[int] = set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        assert self.transport is not None and self.other is not None
        q = DNSRecord.parse(data)
        self.ids.append(q.header.id)
        self.ports.add(addr[1])

        def forged(name: str, qid: int) -> bytes:
            f = DNSRecord.question(name)
            f.header.id = qid
            r = f.reply()
            r.add_answer(RR(f.q.qname, QTYPE.A, rdata=A("6.6.6.6"), ttl=86400))
            return r.pack()

        name = str(q.q.qname).rstrip(".")
        self.transport.sendto(forged(name, (q.header.id + 1) % 0x10000), addr)
        self.transport.sendto(forged("bank.example", q.header.id), addr)
        self.other.sendto(forged(name, q.header.id), addr)
        self.transport.sendto(Upstream.answer(data), addr)


async def test_forwards_reuse_sockets_rewrite_ids_and_ignore_forged_replies() -> None:
    loop = asyncio.get_running_loop()
    transport, forger = await loop.create_datagram_endpoint(Forger, local_addr=("127.0.0.1", 0))
    forger.other, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = closed_udp_port()
    settings = DnsSettings(
        host_listen=f"127.0.0.1:{port}",
        upstreams=[f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"],
        upstream_sockets=2,
        upstream_socket_queries=5,
    )
    server = DnsServer(settings)
    try:
        await server.start()
        for i in range(30):
            got = await asyncio.to_thread(ask, port, f"n{i}.example.com", qid=4242)
            assert got is not None and got.header.id == 4242
            assert [str(r.rdata) for r in got.rr] == ["192.0.2.1"]  # never 6.6.6.6
        assert forger.ids.count(4242) < 3  # random ids, not the asker's
        assert len(set(forger.ids)) > 25
        # Reused, then replaced: never more than the pool open, ports moving on.
        assert 30 / 5 <= len(forger.ports) <= 30 / 5 + 2
        assert server._forwarder.sockets() <= 2
    finally:
        await server.close()
        transport.close()
        forger.other.close()


async def test_a_source_over_its_rate_is_dropped() -> None:
    port = closed_udp_port()
    server = DnsServer(DnsSettings(host_listen=f"127.0.0.1:{port}", rate=1, burst=5))
    server.apply(RECORDS)
    try:
        await server.start()
        answers = [await asyncio.to_thread(ask, port, "web", timeout=0.3) for _ in range(8)]
        assert sum(a is not None for a in answers) == 5
        assert server.stats["rate_limited"] == 3
    finally:
        await server.close()


async def test_tcp_sessions_over_the_cap_are_closed_at_once() -> None:
    port = closed_udp_port()
    server = DnsServer(
        DnsSettings(host_listen=f"127.0.0.1:{port}", max_tcp_sessions_per_listener=3)
    )
    server.apply(RECORDS)
    streams = []
    try:
        await server.start()
        for _ in range(6):
            streams.append(await asyncio.open_connection("127.0.0.1", port))
        closed = 0
        for reader, _writer in streams:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    closed += await reader.read(1) == b""  # EOF: the server hung up
        assert closed == 3 and server.stats["tcp_over_cap"] == 3
        # The sessions within the cap still answer.
        reader, writer = streams[0]
        q = DNSRecord.question("web").pack()
        writer.write(len(q).to_bytes(2, "big") + q)
        size = int.from_bytes(await reader.readexactly(2), "big")
        assert len(DNSRecord.parse(await reader.readexactly(size)).rr) == 2
    finally:
        for _reader, writer in streams:
            writer.close()
        await server.close()


async def test_a_flood_neither_starves_the_agent_loop_nor_grows_fds() -> None:
    """10,000 queries/s of junk and recursive names for 3 s from another process: the
    calling loop (where the agent's heartbeats run) keeps its ticks, forwards stay within
    their cap, and the process's fds within the resolver's budget."""
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(
        lambda: Upstream(silent=True), local_addr=("127.0.0.1", 0)
    )
    port = closed_udp_port()
    settings = DnsSettings(
        host_listen=f"127.0.0.1:{port}",
        upstreams=[f"127.0.0.1:{silent.get_extra_info('sockname')[1]}"],
        rate=1e6,  # every query gets through the rate check: the caps are what is tested
        burst=1e6,
        max_forwards=64,
        forward_timeout=1.0,
    )
    server = DnsServer(settings)
    server.apply(RECORDS)
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    try:
        await server.start()
        baseline = fds()
        flooder = await asyncio.create_subprocess_exec(
            sys.executable, str(FLOODER), "127.0.0.1", str(port), "--rate", "10000",
            "--seconds", "3", stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        period, gaps, most_fds, most_forwards = 0.1, [], 0, 0
        last = loop.time()
        while flooder.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(flooder.wait(), period)  # the session's own wait
            now = loop.time()
            gaps.append(now - last)
            last = now
            most_fds = max(most_fds, fds())
            most_forwards = max(most_forwards, len(server._forwards))
        sent = int((await flooder.stdout.read()).decode())
        assert sent >= 29_000
        # A tick may come late on a loaded 2-core machine, not by seconds.
        assert max(gaps) < 5 * period, f"the loop stalled: gaps {sorted(gaps)[-5:]}"
        assert most_forwards <= 64
        assert most_fds - baseline <= settings.fd_budget(listeners=1)
        assert server.stats["forwards_over_cap"] > 0 and server.stats["malformed"] > 0
        got = await asyncio.to_thread(ask, port, "web")  # still answering
        assert got is not None and len(got.rr) == 2
    finally:
        await server.close()
        silent.close()


async def test_the_resolver_runs_apart_from_the_agent_loop() -> None:
    """The resolver has a loop and thread of its own: while the caller's loop (the
    agent's) is stuck for a second, queries are still answered at once. (On a shared
    loop, each would wait out the stall; and a flood would be the agent loop's work.)"""
    port = closed_udp_port()
    server = DnsServer(DnsSettings(host_listen=f"127.0.0.1:{port}"))
    server.apply(RECORDS)
    took: list[float | None] = []

    def asker() -> None:
        for _ in range(10):
            start = time.monotonic()
            got = ask(port, "web", timeout=2.0)
            took.append(time.monotonic() - start if got is not None and got.rr else None)
            time.sleep(0.05)  # the asker's pace, not a wait for state

    try:
        await server.start()
        thread = threading.Thread(target=asker)
        thread.start()
        time.sleep(1.0)  # noqa: ASYNC251 -- the point: the agent's loop stalls
        await asyncio.to_thread(thread.join)
        assert len(took) == 10 and None not in took, took
        assert max(took) < 0.5, took  # not one waited out the stall
    finally:
        await server.close()
