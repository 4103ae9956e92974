"""A small blocking rtnetlink client: the few link, address, route and neighbour messages we send.

Why not pyroute2 on this path: a container start makes about ten rtnetlink requests,
and pyroute2 spent ~10 ms of CPU per container on them (socket object setup, request
filters, its generic attribute classes), on a machine that is CPU-bound while a
service scales up. These messages have a fixed shape; packing them with ``struct`` costs
microseconds. The encoders and the decoder are pure functions (unit-tested without
root); ``Rtnl`` is the socket.

Blocking on purpose: the kernel handles an rtnetlink request inside ``sendmsg()``
(taking rtnl_lock, possibly waiting for it), so a non-blocking socket would not keep the
event loop free anyway. Callers run ``Rtnl`` on a worker thread (``netns.run_in_netns``),
which also decides the netns a socket belongs to: the one its creating thread is in.

Errors are ``NetlinkError`` (an OSError carrying the errno), with the kernel's extended
ack text when it sends one.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
RTM_GETNEIGH = 30

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_PROTINFO = 12
NLA_F_NESTED = 0x8000
IFLA_BRPORT_LEARNING = 8
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFLA_VXLAN_ID = 1
IFLA_VXLAN_LINK = 3
IFLA_VXLAN_LOCAL = 4
IFLA_VXLAN_LEARNING = 7
IFLA_VXLAN_PROXY = 11
IFLA_VXLAN_PORT = 15
IFLA_VXLAN_UDP_CSUM = 18
NDA_DST = 1
NDA_LLADDR = 2
NTF_SELF = 0x02
NUD_PERMANENT = 0x80
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5

IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
_ATTR = struct.Struct("=HH")  # rtattr: len, type
_U32 = struct.Struct("=I")
_BE16 = struct.Struct("!H")
_I32 = struct.Struct("=i")

RECV_SIZE = 1 << 16
"""Receive buffer: one datagram of a dump is at most 32 KiB."""


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` says why."""


# -- encoding --------------------------------------------------------------------------


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (_align(size) - size)


def attr_str(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def nested(kind: int, *parts: bytes) -> bytes:
    # No NLA_F_NESTED, like iproute2: these old attributes predate strict checking.
    return attr(kind, b"".join(parts))


def message(kind: int, flags: int, body: bytes, seq: int = 0) -> bytes:
    """A whole netlink message (header + body); the kernel fills in nothing."""
    return _HDR.pack(_HDR.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body


def ifinfo(index: int = 0, *, up: bool | None = None, family: int = socket.AF_UNSPEC) -> bytes:
    """An ifinfomsg; ``up`` True/False sets/clears IFF_UP, None leaves flags alone."""
    change = IFF_UP if up is not None else 0
    return _IFINFO.pack(family, 0, index, IFF_UP if up else 0, change)


def port_learning_body(index: int, learning: bool) -> bytes:
    """``bridge link set dev <index> learning on|off``: an AF_BRIDGE ifinfomsg with
    IFLA_PROTINFO { IFLA_BRPORT_LEARNING u8 }, sent as RTM_SETLINK."""
    return ifinfo(index, family=socket.AF_BRIDGE) + nested(
        IFLA_PROTINFO | NLA_F_NESTED, attr(IFLA_BRPORT_LEARNING, bytes([int(learning)]))
    )


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def veth_body(
    name: str,
    *,
    mtu: int,
    peer_name: str,
    peer_mac: str,
    peer_netns_fd: int,
    master: int | None = None,
) -> bytes:
    """RTM_NEWLINK body of a veth pair, the peer born in another netns. The host end
    comes up; the peer cannot (veth_open answers ENOTCONN before the pair is linked),
    so the caller sets it up afterwards."""
    peer = (
        ifinfo()
        + attr_str(IFLA_IFNAME, peer_name)
        + attr(IFLA_ADDRESS, mac_bytes(peer_mac))
        + attr_u32(IFLA_MTU, mtu)
        + attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
    )
    info = nested(
        IFLA_LINKINFO,
        attr_str(IFLA_INFO_KIND, "veth"),
        nested(IFLA_INFO_DATA, nested(VETH_INFO_PEER, peer)),
    )
    extra = attr_u32(IFLA_MASTER, master) if master is not None else b""
    return ifinfo(up=True) + attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_MTU, mtu) + extra + info


def vxlan_body(
    name: str,
    *,
    vni: int,
    local: ipaddress.IPv4Address,
    port: int,
    mtu: int,
    link: int | None = None,
    master: int | None = None,
) -> bytes:
    """RTM_NEWLINK body of a VXLAN device for static peers: no learning (the FDB is
    programmed), ``proxy`` on (ARP requests are answered from the device's neighbour
    table, so no ARP crosses the underlay), unicast only (no group). ``link`` pins the
    underlay device; the device comes up at once."""
    data = (
        attr_u32(IFLA_VXLAN_ID, vni)
        + attr(IFLA_VXLAN_LOCAL, local.packed)
        + attr(IFLA_VXLAN_PORT, _BE16.pack(port))
        + attr(IFLA_VXLAN_LEARNING, b"\0")
        + attr(IFLA_VXLAN_PROXY, b"\1")
        # Outer UDP checksum zero, as RFC 7348 recommends for IPv4: the inner frame carries
        # its own checksums, and computing the outer one costs throughput.
        + attr(IFLA_VXLAN_UDP_CSUM, b"\0")
        + (attr_u32(IFLA_VXLAN_LINK, link) if link is not None else b"")
    )
    info = nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "vxlan"), nested(IFLA_INFO_DATA, data))
    extra = attr_u32(IFLA_MASTER, master) if master is not None else b""
    return ifinfo(up=True) + attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_MTU, mtu) + extra + info


def neigh_body(
    family: int,
    index: int,
    *,
    dst: bytes | None = None,
    lladdr: bytes | None = None,
    state: int = NUD_PERMANENT,
    flags: int = 0,
) -> bytes:
    """An ndmsg with NDA_DST / NDA_LLADDR: the shape of every neighbour and FDB request."""
    body = _NDMSG.pack(family, index, state, flags, 0)
    if dst is not None:
        body += attr(NDA_DST, dst)
    if lladdr is not None:
        body += attr(NDA_LLADDR, lladdr)
    return body


def fdb_body(index: int, mac: str, dst: ipaddress.IPv4Address | None = None) -> bytes:
    """``bridge fdb add <mac> dev <index> dst <dst> self permanent`` (AF_BRIDGE, NTF_SELF:
    the VXLAN device's own table, not its bridge's). Without ``dst``: the whole entry
    (what a delete names)."""
    return neigh_body(
        socket.AF_BRIDGE,
        index,
        dst=dst.packed if dst is not None else None,
        lladdr=mac_bytes(mac),
        flags=NTF_SELF,
    )


def arp_body(index: int, ip: ipaddress.IPv4Address, mac: str | None = None) -> bytes:
    """``ip neigh add <ip> lladdr <mac> dev <index> nud permanent``; without ``mac``:
    the entry a delete names."""
    return neigh_body(
        socket.AF_INET, index, dst=ip.packed, lladdr=mac_bytes(mac) if mac is not None else None
    )


def addr_body(index: int, address: ipaddress.IPv4Interface) -> bytes:
    """RTM_NEWADDR body: ``address`` with its broadcast on link ``index`` (like ``ip addr add``)."""
    ip = address.ip.packed
    return (
        _IFADDR.pack(socket.AF_INET, address.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        + attr(IFA_LOCAL, ip)
        + attr(IFA_ADDRESS, ip)
        + attr(IFA_BROADCAST, address.network.broadcast_address.packed)
    )


def default_route_body(gateway: ipaddress.IPv4Address, oif: int) -> bytes:
    """RTM_NEWROUTE body of ``default via gateway dev oif``."""
    head = _RTMSG.pack(
        socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
    )
    return head + attr(RTA_GATEWAY, gateway.packed) + attr_u32(RTA_OIF, oif)


# -- decoding --------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """What we read back about a link."""

    index: int
    name: str
    kind: str
    """IFLA_INFO_KIND ("veth", "bridge", ...), "" for none (lo)."""
    master: int | None
    vni: int | None = None
    """IFLA_VXLAN_ID of a vxlan device."""
    local: str | None = None
    """IFLA_VXLAN_LOCAL of a vxlan device."""
    mtu: int | None = None


def attrs(data: bytes | memoryview, offset: int = 0) -> Iterator[tuple[int, memoryview]]:
    """(type without flag bits, payload) of each rtattr in ``data[offset:]``."""
    view = memoryview(data)
    while offset + _ATTR.size <= len(view):
        size, kind = _ATTR.unpack_from(view, offset)
        if size < _ATTR.size:
            break
        yield kind & 0x3FFF, view[offset + _ATTR.size : offset + size]
        offset += _align(size)


def _cstr(payload: memoryview) -> str:
    return bytes(payload).split(b"\0", 1)[0].decode(errors="replace")


def parse_link(body: memoryview) -> Link:
    """A Link from the body of an RTM_NEWLINK message."""
    _, _, index, _, _ = _IFINFO.unpack_from(body)
    name, kind, master, mtu = "", "", None, None
    data: memoryview | None = None
    for kind_, payload in attrs(body, _IFINFO.size):
        if kind_ == IFLA_IFNAME:
            name = _cstr(payload)
        elif kind_ == IFLA_MTU:
            mtu = _U32.unpack_from(payload)[0]
        elif kind_ == IFLA_MASTER:
            master = _U32.unpack_from(payload)[0]
        elif kind_ == IFLA_LINKINFO:
            for info_kind, info in attrs(payload):
                if info_kind == IFLA_INFO_KIND:
                    kind = _cstr(info)
                elif info_kind == IFLA_INFO_DATA:
                    data = info
    vni, local = None, None
    if kind == "vxlan" and data is not None:
        for data_kind, payload in attrs(data):
            if data_kind == IFLA_VXLAN_ID:
                vni = _U32.unpack_from(payload)[0]
            elif data_kind == IFLA_VXLAN_LOCAL and len(payload) == 4:
                local = str(ipaddress.IPv4Address(bytes(payload)))
    return Link(index=index, name=name, kind=kind, master=master, vni=vni, local=local, mtu=mtu)


@dataclass(frozen=True)
class Neigh:
    """A neighbour or FDB entry as a dump reports it."""

    family: int
    index: int
    state: int
    flags: int
    dst: str | None
    """NDA_DST: the IP of a neighbour, the remote (VTEP) of a VXLAN FDB entry."""
    lladdr: str | None
    """NDA_LLADDR, as "aa:bb:cc:dd:ee:ff"."""


def mac_str(raw: bytes | memoryview) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def parse_neigh(body: memoryview) -> Neigh:
    """A Neigh from the body of an RTM_NEWNEIGH message (AF_INET or AF_BRIDGE)."""
    family, index, state, flags, _ = _NDMSG.unpack_from(body)
    dst, lladdr = None, None
    for kind, payload in attrs(body, _NDMSG.size):
        if kind == NDA_DST and len(payload) == 4:
            dst = str(ipaddress.IPv4Address(bytes(payload)))
        elif kind == NDA_DST and len(payload) == 16:
            dst = str(ipaddress.IPv6Address(bytes(payload)))
        elif kind == NDA_LLADDR:
            lladdr = mac_str(payload)
    return Neigh(family, index, state, flags, dst, lladdr)


def parse_addr(body: memoryview) -> tuple[int, str, int]:
    """(link index, address, prefix length) from the body of an RTM_NEWADDR message."""
    family, prefixlen, _, _, index = _IFADDR.unpack_from(body)
    address = ""
    for kind, payload in attrs(body, _IFADDR.size):
        if kind == IFA_ADDRESS and family == socket.AF_INET:
            address = str(ipaddress.IPv4Address(bytes(payload)))
        elif kind == IFA_ADDRESS and family == socket.AF_INET6:
            address = str(ipaddress.IPv6Address(bytes(payload)))
    return index, address, prefixlen


def error_of(body: memoryview, flags: int) -> NetlinkError | None:
    """The error an NLMSG_ERROR body reports (None for an ack)."""
    (code,) = _I32.unpack_from(body)
    if code == 0:
        return None
    text = os.strerror(-code)
    if flags & NLM_F_ACK_TLVS:
        # With NETLINK_CAP_ACK the echoed request is only its header.
        for kind, payload in attrs(body, _I32.size + _HDR.size):
            if kind == NLMSGERR_ATTR_MSG:
                text = f"{text} ({_cstr(payload)})"
    return NetlinkError(-code, text)


def split(data: bytes) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, seq, body) of each netlink message in one datagram."""
    view = memoryview(data)
    offset = 0
    while offset + _HDR.size <= len(view):
        size, kind, flags, seq, _ = _HDR.unpack_from(view, offset)
        if size < _HDR.size or offset + size > len(view):
            raise NetlinkError(errno_mod.EPROTO, "truncated netlink message")
        yield kind, flags, seq, view[offset + _HDR.size : offset + size]
        offset += _align(size)


# -- the socket ------------------------------------------------------------------------


class Rtnl:
    """One rtnetlink socket in the netns of the thread that made it. Not thread-safe:
    one request at a time, answered before the next is sent."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            with contextlib.suppress(OSError):  # nicer errors where the kernel offers them
                sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
                sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, body: bytes, flags: int = 0) -> list[memoryview]:
        """Send one request with an ack wanted; return the bodies of its replies (a dump
        or a get). Raises NetlinkError if the kernel refuses."""
        self._seq += 1
        seq = self._seq
        self._sock.send(message(kind, flags | NLM_F_ACK, body, seq))
        replies: list[memoryview] = []
        while True:
            data, _, msg_flags, _ = self._sock.recvmsg(RECV_SIZE)
            if msg_flags & socket.MSG_TRUNC:
                raise NetlinkError(errno_mod.EMSGSIZE, "netlink reply truncated")
            for rkind, rflags, rseq, rbody in split(data):
                if rseq != seq:
                    continue  # a late answer to an earlier, abandoned request
                if rkind == NLMSG_ERROR:
                    error = error_of(rbody, rflags)
                    if error is not None:
                        raise error
                    return replies
                if rkind == NLMSG_DONE:
                    (code,) = _I32.unpack_from(rbody) if len(rbody) >= 4 else (0,)
                    if code < 0:
                        raise NetlinkError(-code, os.strerror(-code))
                    return replies
                replies.append(rbody)  # a dump part, or a get's answer (its ack follows)

    # -- links -------------------------------------------------------------------------

    def links(self) -> list[Link]:
        """Every link of this netns."""
        return [parse_link(b) for b in self.request(RTM_GETLINK, ifinfo(), NLM_F_DUMP)]

    def link(self, name: str) -> Link | None:
        """The link called ``name`` (one RTM_GETLINK by name, no dump), or None."""
        try:
            (body,) = self.request(RTM_GETLINK, ifinfo() + attr_str(IFLA_IFNAME, name))
        except NetlinkError as exc:
            if exc.errno in (errno_mod.ENODEV, errno_mod.ENOENT):
                return None
            raise
        return parse_link(body)

    def set_link(
        self,
        index: int,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        master: int | None = None,
    ) -> None:
        body = ifinfo(index, up=up) + (attr_u32(IFLA_MTU, mtu) if mtu is not None else b"")
        if master is not None:
            body += attr_u32(IFLA_MASTER, master)
        self.request(RTM_NEWLINK, body)

    def set_port_learning(self, index: int, learning: bool) -> None:
        self.request(RTM_SETLINK, port_learning_body(index, learning))

    def delete_link(self, name: str) -> bool:
        """Delete link ``name``; False if there was none."""
        try:
            self.request(RTM_DELLINK, ifinfo() + attr_str(IFLA_IFNAME, name))
        except NetlinkError as exc:
            if exc.errno in (errno_mod.ENODEV, errno_mod.ENOENT):
                return False
            raise
        return True

    def add_bridge(self, name: str, mtu: int) -> None:
        info = nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge"))
        body = ifinfo() + attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_MTU, mtu) + info
        self.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)

    def add_veth(self, body: bytes) -> None:
        """Create the veth pair ``veth_body`` describes."""
        self.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)

    def add_vxlan(self, body: bytes) -> None:
        """Create the VXLAN device ``vxlan_body`` describes."""
        self.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL)

    # -- neighbours and FDB entries ----------------------------------------------------

    def neighbours(self, family: int) -> list[Neigh]:
        """Every neighbour (AF_INET) or FDB (AF_BRIDGE) entry of this netns."""
        body = _NDMSG.pack(family, 0, 0, 0, 0)
        return [parse_neigh(b) for b in self.request(RTM_GETNEIGH, body, NLM_F_DUMP)]

    def set_neigh(self, body: bytes) -> None:
        """Add or replace the entry ``body`` (``fdb_body`` / ``arp_body``) describes."""
        self.request(RTM_NEWNEIGH, body, NLM_F_CREATE | NLM_F_REPLACE)

    def delete_neigh(self, body: bytes) -> bool:
        """Delete the entry ``body`` names; False if there was none."""
        try:
            self.request(RTM_DELNEIGH, body)
        except NetlinkError as exc:
            if exc.errno in (errno_mod.ENOENT, errno_mod.ENODEV, errno_mod.ESRCH):
                return False
            raise
        return True

    # -- addresses and routes ----------------------------------------------------------

    def all_addresses(self) -> list[tuple[int, str, int]]:
        """(link index, address, prefix length) of every IPv4 address of this netns."""
        body = _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)
        return [parse_addr(b) for b in self.request(RTM_GETADDR, body, NLM_F_DUMP)]

    def addresses(self, index: int) -> list[tuple[str, int]]:
        """(address, prefix length) of the IPv4 addresses on link ``index``."""
        return [(address, plen) for i, address, plen in self.all_addresses() if i == index]

    def add_address(self, index: int, address: ipaddress.IPv4Interface) -> None:
        self.request(RTM_NEWADDR, addr_body(index, address), NLM_F_CREATE | NLM_F_EXCL)

    def add_default_route(self, gateway: ipaddress.IPv4Address, oif: int) -> None:
        self.request(RTM_NEWROUTE, default_route_body(gateway, oif), NLM_F_CREATE | NLM_F_EXCL)
