"""The DNS resolver's pure limits and forwarding bookkeeping on fake clocks: per-source
token buckets in a bounded table, in-flight caps, query id rewriting and reply matching;
and the agent's open-file limit."""

from __future__ import annotations

import random
import resource
import struct

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from orch.agent import dnswire
from orch.agent.dns import DnsSettings, _Listener, check_fd_budget
from orch.agent.dnsforward import Pending, Sent
from orch.agent.dnslimits import InFlight, RateLimiter
from orch.agent.fdlimit import raise_fd_limit

# -- rate limiter --------------------------------------------------------------------


def test_a_source_gets_its_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=5, max_keys=8)
    assert [limiter.allow("10.0.0.1", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not limiter.allow("10.0.0.1", 0.05)  # half a token so far
    assert limiter.allow("10.0.0.1", 0.1)
    assert not limiter.allow("10.0.0.1", 0.1)
    # Idle time refills up to the burst, never past it.
    assert sum(limiter.allow("10.0.0.1", 100.0) for _ in range(10)) == 5


def test_sources_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_keys=8)
    assert limiter.allow("10.0.0.1", 0.0) and not limiter.allow("10.0.0.1", 0.0)
    assert limiter.allow("10.0.0.2", 0.0)


def test_the_table_is_bounded_and_drops_the_least_recently_seen() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_keys=3)
    for ip in ("a", "b", "c"):
        assert limiter.allow(ip, 0.0)
    assert not limiter.allow("a", 0.0)  # a is now the most recently seen
    assert limiter.allow("d", 0.0)  # evicts b, the least recently seen
    assert len(limiter) == 3
    assert not limiter.allow("a", 0.0) and not limiter.allow("c", 0.0)  # still limited
    assert limiter.allow("b", 0.0)  # forgotten: a fresh bucket
    for i in range(10_000):  # a flood of spoofed sources
        limiter.allow(f"x{i}", 0.0)
    assert len(limiter) == 3


def test_a_clock_going_back_gives_no_tokens() -> None:
    limiter = RateLimiter(rate=10, burst=1, max_keys=2)
    assert limiter.allow("a", 5.0)
    assert not limiter.allow("a", 1.0)
    assert not limiter.allow("a", 5.05)


@pytest.mark.parametrize("kwargs", [{"rate": 0}, {"burst": 0.5}, {"max_keys": 0}])
def test_a_limiter_needs_positive_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        RateLimiter(**{"rate": 1, "burst": 1, "max_keys": 1, **kwargs})


# -- in-flight caps ------------------------------------------------------------------


def test_in_flight_caps_per_key_and_in_total() -> None:
    caps = InFlight(total=3, per_key=2)
    assert caps.acquire("a") and caps.acquire("a")
    assert not caps.acquire("a")  # per key
    assert caps.acquire("b")
    assert not caps.acquire("c")  # total
    assert len(caps) == 3
    caps.release("a")
    assert caps.acquire("c")
    assert not caps.acquire("a")
    for key in ("a", "b", "c"):
        caps.release(key)
    assert len(caps) == 0 and caps.keys() == 0  # no key left behind
    with pytest.raises(ValueError, match="without a slot"):
        caps.release("a")


# -- id rewriting and reply matching -------------------------------------------------


def query(name: str = "example.com", qid: int = 4242) -> tuple[dnswire.Query, bytes]:
    q = DNSRecord.question(name)
    q.header.id = qid
    data = q.pack()
    return dnswire.parse_query(data), data


def reply_to(data: bytes, new_id: int, *, name: str | None = None) -> bytes:
    """The upstream's answer to ``data`` as sent with ``new_id`` (optionally for another
    question ``name``)."""
    q = DNSRecord.parse(struct.pack("!H", new_id) + data[2:])
    if name is not None:
        q = DNSRecord.question(name)
        q.header.id = new_id
    r = q.reply()
    r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("192.0.2.1")))
    return r.pack()


def test_ids_are_random_and_unique_among_queries_in_flight() -> None:
    pending = Pending(random.Random(7))
    q, _ = query()
    ids = [pending.add(Sent(q.id, q.question, via="s")) for _ in range(3000)]
    assert len(set(ids)) == 3000
    assert len(pending) == 3000
    assert ids != sorted(ids)


def test_every_id_in_flight_is_an_overflow_not_a_loop() -> None:
    pending = Pending(random.Random(1))
    q, _ = query()
    pending._sent = {i: Sent(1, q.question, via="s") for i in range(0x10000)}
    with pytest.raises(OverflowError):
        pending.add(Sent(1, q.question, via="s"))


def test_a_reply_gets_the_askers_id_back() -> None:
    pending = Pending()
    q, data = query(qid=4242)
    new_id = pending.add(Sent(q.id, q.question, via="s1"))
    found = pending.match(reply_to(data, new_id), "s1")
    assert found is not None
    sent, restored = found
    assert sent.original_id == 4242
    parsed = DNSRecord.parse(restored)
    assert parsed.header.id == 4242 and str(parsed.rr[0].rdata) == "192.0.2.1"


def test_a_reply_with_another_question_case_is_still_ours() -> None:
    pending = Pending()
    q, data = query("Example.COM")
    new_id = pending.add(Sent(q.id, q.question, via="s1"))
    assert pending.match(reply_to(data, new_id, name="example.com"), "s1") is not None


def test_replies_that_are_not_ours_settle_nothing() -> None:
    pending = Pending()
    q, data = query()
    new_id = pending.add(Sent(q.id, q.question, via="s1"))
    other_id = (new_id + 1) % 0x10000
    assert pending.match(reply_to(data, other_id), "s1") is None  # a guessed id
    assert pending.match(reply_to(data, new_id), "s2") is None  # another socket
    assert pending.match(reply_to(data, new_id, name="evil.example"), "s1") is None
    aaaa = DNSRecord.parse(reply_to(data, new_id))
    aaaa.q.qtype = QTYPE.AAAA
    assert pending.match(aaaa.pack(), "s1") is None  # another type
    as_query = struct.pack("!H", new_id) + data[2:]  # QR clear: not a response
    assert pending.match(as_query, "s1") is None
    assert pending.match(b"\x00" * 5, "s1") is None
    pending.remove(new_id)
    assert pending.match(reply_to(data, new_id), "s1") is None  # settled already


# -- who may have a name forwarded ------------------------------------------------------


async def test_the_node_listener_forwards_only_for_this_host() -> None:
    node = _Listener(None, RateLimiter(rate=1, burst=1, max_keys=1), own_address="10.0.0.5")
    for source in ("127.0.0.1", "127.0.0.53", "::1", "10.0.0.5"):
        assert node.may_forward(source), source
    for source in ("10.0.0.6", "192.0.2.1", "::ffff:10.0.0.5", "fe80::1%eth0", "junk", ""):
        assert not node.may_forward(source), source
    container = _Listener(["front"], RateLimiter(rate=1, burst=1, max_keys=1))
    assert container.may_forward("10.9.9.9")  # its own socket: the container asks


# -- settings and the agent's fd limit -----------------------------------------------


def test_dns_settings_refuse_a_cap_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="max_forwards: 0 is not positive"):
        DnsSettings(max_forwards=0)
    with pytest.raises(ValueError, match=r"burst: 0\.5 is less than one query"):
        DnsSettings(burst=0.5)


def test_the_dns_fd_budget_is_well_under_the_agent_fd_limit() -> None:
    settings = DnsSettings(upstreams=["10.0.0.53", "10.0.0.54", "10.0.0.55"])
    budget = settings.fd_budget(listeners=1000)  # 999 containers and the node
    assert budget == 2 * 1000 + 64 + 4 * 3 + 256
    assert budget * 10 < 65536


def test_a_dns_budget_near_the_fd_limit_is_reported() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, before[1]))
        assert not check_fd_budget(DnsSettings())  # 1,024 is too few for 100 containers
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(before[1], 65536), before[1]))
        assert check_fd_budget(DnsSettings()) == (min(before[1], 65536) >= 8 * 522)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_the_agent_raises_its_soft_fd_limit_up_to_the_hard_one() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, before[1]))
        got = raise_fd_limit(4096)
        want = 4096 if before[1] == resource.RLIM_INFINITY else min(4096, before[1])
        assert got == want == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raise_fd_limit(2048) == want  # never lowered
        if before[1] != resource.RLIM_INFINITY:
            assert raise_fd_limit(before[1] + 1) == before[1]  # at most the hard limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
