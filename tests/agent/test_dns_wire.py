"""The hand-made DNS codec, checked against dnslib: queries it decodes, replies it builds
(flags, question echo, A records, OPT, truncation), and what it refuses."""

from __future__ import annotations

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from orch.agent import dnswire


def query(name: str, qtype: str = "A", *, edns: int | None = None, rd: bool = True) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.rd = int(rd)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return q.pack()


def test_a_query_is_decoded() -> None:
    data = query("Web.Front.", edns=4096)
    q = dnswire.parse_query(data)
    assert q.id == DNSRecord.parse(data).header.id
    assert (q.name, q.qtype, q.qclass, q.opcode) == ("web.front", 1, 1, 0)
    assert q.edns_size == 4096
    assert dnswire.parse_query(query("web")).edns_size is None
    assert dnswire.parse_query(query(".")).name == ""


def test_a_reply_parses_with_dnslib_and_echoes_the_question() -> None:
    data = query("Web.Front", edns=1400)
    q = dnswire.parse_query(data)
    got = DNSRecord.parse(dnswire.reply(q, addresses=("10.10.0.2", "10.10.0.3"), ttl=1))
    assert got.header.id == q.id
    assert (got.header.qr, got.header.aa, got.header.rd, got.header.ra, got.header.tc) == (
        1, 1, 1, 1, 0,
    )  # fmt: skip
    assert got.header.rcode == RCODE.NOERROR
    assert str(got.q.qname) == "Web.Front."  # as asked
    assert [(str(r.rname), r.rtype, r.ttl, str(r.rdata)) for r in got.rr] == [
        ("Web.Front.", QTYPE.A, 1, "10.10.0.2"),
        ("Web.Front.", QTYPE.A, 1, "10.10.0.3"),
    ]
    assert [r.rtype for r in got.ar] == [QTYPE.OPT]
    assert got.ar[0].rclass == dnswire.EDNS_SIZE


def test_empty_and_nxdomain_replies() -> None:
    q = dnswire.parse_query(query("web", "AAAA", rd=False))
    empty = DNSRecord.parse(dnswire.reply(q))
    assert empty.header.rcode == RCODE.NOERROR and not empty.rr and not empty.header.rd
    assert not empty.ar  # no OPT for a query without one
    nx = DNSRecord.parse(dnswire.reply(q, rcode=dnswire.NXDOMAIN))
    assert nx.header.rcode == RCODE.NXDOMAIN and nx.q.qtype == QTYPE.AAAA


def test_a_udp_reply_keeps_what_fits_and_sets_tc() -> None:
    many = tuple(f"10.10.{i // 250}.{i % 250 + 1}" for i in range(100))
    plain = dnswire.parse_query(query("web"))
    data = dnswire.reply(plain, addresses=many, max_size=dnswire.udp_limit(plain, 1232))
    assert len(data) <= 512
    got = DNSRecord.parse(data)
    assert got.header.tc == 1 and 0 < len(got.rr) < 100
    edns = dnswire.parse_query(query("web", edns=4096))
    assert dnswire.udp_limit(edns, 1232) == 1232
    bigger = DNSRecord.parse(dnswire.reply(edns, addresses=many, max_size=1232))
    assert len(got.rr) < len(bigger.rr) < 100 and bigger.header.tc == 1
    whole = DNSRecord.parse(dnswire.reply(plain, addresses=many, max_size=None))  # TCP
    assert len(whole.rr) == 100 and whole.header.tc == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\x12",  # no header
        DNSRecord.question("web").reply().pack(),  # a response
        bytes.fromhex("abcd0100000200000000000003776562000001000103776562000001 0001"),  # 2 q's
        bytes.fromhex("abcd01000001000000000000c00c00010001"),  # compressed question name
        bytes.fromhex("abcd010000010000000000000377"),  # truncated label
    ],
)
def test_what_is_refused(data: bytes) -> None:
    with pytest.raises(dnswire.WireError):
        dnswire.parse_query(data)


def test_error_replies_answer_queries_only() -> None:
    bad = bytes.fromhex("abcd01000001000000000000c00c00010001")
    got = DNSRecord.parse(dnswire.error_reply(bad, dnswire.FORMERR))
    assert got.header.id == 0xABCD and got.header.rcode == RCODE.FORMERR and got.header.qr
    assert dnswire.error_reply(DNSRecord.question("x").reply().pack(), 1) is None
    assert dnswire.error_reply(b"\x00", 1) is None
