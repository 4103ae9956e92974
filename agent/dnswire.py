"""The DNS wire format for the one shape of message the agent's resolver answers itself:
a standard query with one question, and its reply with A records.

Why by hand and not with dnslib: dnslib parses, builds and packs such a reply in ~170 us,
which alone caps one resolver at under 6,000 queries per second on this project's
machines; slicing the question out of the packet and appending fixed-size A records
takes a few microseconds. The format is small and fixed (RFC 1035 4.1, EDNS per RFC
6891), and the tests check every reply against dnslib's parser. Anything else (several
questions, other opcodes, compressed question names) is not decoded: the resolver answers
FORMERR or NOTIMP, or forwards the packet untouched.

Replies echo the question as asked (case included), point every answer's name at it
(compression pointer to offset 12), copy RD, set RA, and carry an OPT record when the
query did. A UDP reply that would not fit the asker's buffer keeps the answers that fit
and sets TC, so a client that cares retries over TCP.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")
A_FIXED = struct.Struct("!HHHIH")  # name pointer, type, class, ttl, rdlength

TYPE_A = 1
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1

NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
OPCODE_SHIFT = 11

UDP_PLAIN = 512
"""The largest UDP reply to a query without EDNS (RFC 1035)."""

EDNS_SIZE = 1232
"""The UDP size our OPT records advertise (the DNS flag day 2020 value)."""

_A_SIZE = A_FIXED.size + 4
_OPT_SIZE = 11
_NAME_POINTER = 0xC000 | HEADER.size  # the question's name always starts at offset 12


class WireError(ValueError):
    """A packet this codec does not decode (malformed or of an unsupported shape)."""


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str
    """The question name in lower case, without the trailing dot ("" for the root)."""
    qtype: int
    qclass: int
    question: bytes
    """The question section as received (echoed in the reply)."""
    edns_size: int | None
    """The asker's UDP buffer size from its OPT record; None without EDNS."""

    @property
    def opcode(self) -> int:
        return (self.flags >> OPCODE_SHIFT) & 0xF


def parse_query(data: bytes) -> Query:
    """Decode a query with exactly one question. WireError if it is not one."""
    if len(data) < HEADER.size:
        raise WireError("shorter than a DNS header")
    qid, flags, qdcount, _an, _ns, arcount = HEADER.unpack_from(data)
    if flags & QR:
        raise WireError("a response, not a query")
    if qdcount != 1:
        raise WireError(f"{qdcount} questions")
    labels = []
    pos = HEADER.size
    while True:
        if pos >= len(data):
            raise WireError("question name runs past the packet")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0:
            raise WireError("compressed or extended label in the question")
        label = data[pos + 1 : pos + 1 + length]
        if len(label) != length:
            raise WireError("question label runs past the packet")
        labels.append(label)
        pos += 1 + length
    if pos + 4 > len(data):
        raise WireError("question type and class missing")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    end = pos + 4
    name = b".".join(labels).decode("ascii", errors="replace").lower()
    return Query(
        id=qid,
        flags=flags,
        name=name,
        qtype=qtype,
        qclass=qclass,
        question=data[HEADER.size : end],
        edns_size=_edns_size(data, end) if arcount else None,
    )


def _edns_size(data: bytes, pos: int) -> int | None:
    """The UDP size of an OPT record at ``pos`` (the first additional record when the
    query has no answer or authority records, as queries do); None if there is none."""
    if pos + _OPT_SIZE > len(data) or data[pos] != 0:
        return None
    rtype, size = struct.unpack_from("!HH", data, pos + 1)
    return size if rtype == TYPE_OPT else None


def reply(
    query: Query,
    *,
    rcode: int = NOERROR,
    addresses: tuple[str, ...] | list[str] = (),
    ttl: int = 1,
    authoritative: bool = True,
    max_size: int | None = UDP_PLAIN,
) -> bytes:
    """The reply to ``query``: ``addresses`` as A records (IPv4) with ``ttl``. With
    ``max_size`` (UDP), answers that do not fit are left out and TC is set; None (TCP)
    means no limit."""
    opt = b"" if query.edns_size is None else _opt(EDNS_SIZE)
    answers = list(addresses)
    truncated = False
    if max_size is not None:
        room = max_size - HEADER.size - len(query.question) - len(opt)
        fits = max(0, room // _A_SIZE)
        if fits < len(answers):
            answers, truncated = answers[:fits], True
    flags = QR | (query.flags & (0xF << OPCODE_SHIFT)) | (query.flags & RD) | RA | rcode
    if authoritative:
        flags |= AA
    if truncated:
        flags |= TC
    parts = [
        HEADER.pack(query.id, flags, 1, len(answers), 0, 1 if opt else 0),
        query.question,
    ]
    for address in answers:
        parts.append(A_FIXED.pack(_NAME_POINTER, TYPE_A, CLASS_IN, ttl, 4))
        parts.append(socket.inet_aton(address))
    parts.append(opt)
    return b"".join(parts)


def _opt(size: int) -> bytes:
    """An OPT pseudo-record: root name, our UDP size, no extended rcode, version 0."""
    return b"\x00" + struct.pack("!HHIH", TYPE_OPT, size, 0, 0)


def error_reply(data: bytes, rcode: int) -> bytes | None:
    """A bare reply (header only) with ``rcode`` for a packet that could not be decoded;
    None if not even its header could (nothing to answer)."""
    if len(data) < HEADER.size:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    if flags & QR:
        return None  # never answer a response: that is how reflection loops start
    flags = QR | (flags & (0xF << OPCODE_SHIFT)) | (flags & RD) | RA | rcode
    return HEADER.pack(qid, flags, 0, 0, 0, 0)


def udp_limit(query: Query, ours: int) -> int:
    """How large a UDP reply to ``query`` may be: the asker's EDNS size, at most ``ours``,
    and 512 without EDNS."""
    if query.edns_size is None:
        return UDP_PLAIN
    return max(UDP_PLAIN, min(query.edns_size, ours))
