"""The small rtnetlink client: its message encoding (pure) and the real kernel answering it.

The pure tests pin the wire format of what we send and how we read replies; the
integration tests make links and addresses in a throwaway netns and read them back both
through ``Rtnl`` and through iproute2 (``ip``), which is not our code.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

import pytest
from overlay_helpers import needs_netns

from orch.overlay import netns as ns
from orch.overlay import rtnl
from orch.overlay.rtnl import NetlinkError, Rtnl

IFACE = ipaddress.IPv4Interface


def test_attributes_are_padded_to_four_bytes() -> None:
    encoded = rtnl.attr_str(rtnl.IFLA_IFNAME, "eth0")  # 4 header + 5 payload + 3 padding
    assert encoded == struct.pack("=HH", 9, rtnl.IFLA_IFNAME) + b"eth0\0" + b"\0\0\0"
    assert [(k, bytes(v)) for k, v in rtnl.attrs(encoded + rtnl.attr_u32(4, 1500))] == [
        (rtnl.IFLA_IFNAME, b"eth0\0"),
        (rtnl.IFLA_MTU, struct.pack("=I", 1500)),
    ]


def test_veth_body_nests_the_peer_as_the_kernel_expects() -> None:
    body = rtnl.veth_body(
        "orchx-abc", mtu=1400, peer_name="eth0", peer_mac="02:42:0a:00:00:02", peer_netns_fd=7
    )
    host = rtnl.parse_link(memoryview(body))
    assert (host.name, host.kind) == ("orchx-abc", "veth")
    _, _, _, flags, change = struct.unpack_from("=BxHiII", body)
    assert flags & change & rtnl.IFF_UP  # the host end comes up at once
    top = dict(rtnl.attrs(body, 16))
    info = dict(rtnl.attrs(top[rtnl.IFLA_LINKINFO]))
    peer = dict(rtnl.attrs(info[rtnl.IFLA_INFO_DATA]))[rtnl.VETH_INFO_PEER]
    _, _, _, peer_flags, peer_change = struct.unpack_from("=BxHiII", peer)
    assert (peer_flags, peer_change) == (0, 0)  # veth_open refuses before the pair exists
    peer_attrs = dict(rtnl.attrs(peer, 16))
    assert bytes(peer_attrs[rtnl.IFLA_IFNAME]) == b"eth0\0"
    assert bytes(peer_attrs[rtnl.IFLA_ADDRESS]) == bytes.fromhex("02420a000002")
    assert struct.unpack("=I", peer_attrs[rtnl.IFLA_MTU]) == (1400,)
    assert struct.unpack("=I", peer_attrs[rtnl.IFLA_NET_NS_FD]) == (7,)
    assert rtnl.IFLA_MASTER not in top
    with_master = rtnl.veth_body("v", mtu=1500, peer_name="p", peer_mac="02:00:00:00:00:01",
                                 peer_netns_fd=3, master=12)  # fmt: skip
    assert rtnl.parse_link(memoryview(with_master)).master == 12


def test_address_body_carries_local_address_and_broadcast() -> None:
    body = rtnl.addr_body(5, IFACE("10.1.2.3/24"))
    family, plen, _, _, index = struct.unpack_from("=BBBBI", body)
    assert (family, plen, index) == (socket.AF_INET, 24, 5)
    got = {k: bytes(v) for k, v in rtnl.attrs(body, 8)}
    assert got[rtnl.IFA_LOCAL] == got[rtnl.IFA_ADDRESS] == bytes([10, 1, 2, 3])
    assert got[rtnl.IFA_BROADCAST] == bytes([10, 1, 2, 255])
    assert rtnl.parse_addr(memoryview(body)) == (5, "10.1.2.3", 24)


def test_error_messages_carry_errno_and_the_kernels_text() -> None:
    assert rtnl.error_of(memoryview(struct.pack("=i", 0) + bytes(16)), 0) is None
    tlv = rtnl.attr_str(rtnl.NLMSGERR_ATTR_MSG, "Unknown device type")
    body = memoryview(struct.pack("=i", -errno.EOPNOTSUPP) + bytes(16) + tlv)
    error = rtnl.error_of(body, rtnl.NLM_F_ACK_TLVS)
    assert isinstance(error, OSError) and error.errno == errno.EOPNOTSUPP
    assert "Unknown device type" in str(error)


def test_a_truncated_message_is_an_error() -> None:
    whole = rtnl.message(rtnl.RTM_GETLINK, 0, rtnl.ifinfo(), seq=3)
    assert [(k, s) for k, _, s, _ in rtnl.split(whole)] == [(rtnl.RTM_GETLINK, 3)]
    with pytest.raises(NetlinkError, match="truncated"):
        list(rtnl.split(whole[:-4]))


@pytest.mark.integration
@needs_netns
async def test_links_and_addresses_on_the_real_kernel(host_netns: str, run_prefix: str) -> None:
    bridge = f"{run_prefix}-br"

    def work() -> tuple[object, ...]:
        with Rtnl() as r:
            assert r.link(bridge) is None and r.delete_link(bridge) is False
            r.add_bridge(bridge, 1400)
            with pytest.raises(NetlinkError) as dup:
                r.add_bridge(bridge, 1400)
            link = r.link(bridge)
            assert link is not None
            r.add_address(link.index, IFACE("10.77.0.1/24"))
            r.set_link(link.index, up=True, mtu=1300)
            return dup.value.errno, link, r.links(), r.addresses(link.index)

    dup_errno, link, links, addresses = await ns.run_in_netns(host_netns, work)
    assert dup_errno == errno.EEXIST
    assert link.kind == "bridge" and link.name == bridge
    assert [(x.name, x.kind) for x in links] == [("lo", ""), (bridge, "bridge")]
    assert addresses == [("10.77.0.1", 24)]
    rc, out, _ = await ns.exec_in_netns(host_netns, ["ip", "-o", "-4", "addr", "show", bridge])
    assert rc == 0 and "10.77.0.1/24 brd 10.77.0.255" in out
    rc, out, _ = await ns.exec_in_netns(host_netns, ["ip", "-o", "link", "show", bridge])
    assert rc == 0 and "mtu 1300" in out and ",UP" in out

    def delete() -> tuple[bool, bool]:
        with Rtnl() as r:
            return r.delete_link(bridge), r.delete_link(bridge)

    assert await ns.run_in_netns(host_netns, delete) == (True, False)


@pytest.mark.integration
@needs_netns
async def test_veth_peer_is_born_in_the_other_netns(host_netns: str, run_prefix: str) -> None:
    inner = await ns.create_netns(f"{run_prefix}-inner")
    host_end = f"{run_prefix}-v"

    def work() -> None:
        fd = os.open(inner, os.O_RDONLY)
        try:
            with Rtnl() as r:
                r.add_veth(rtnl.veth_body(host_end, mtu=1450, peer_name="eth0",
                                          peer_mac="02:42:0a:00:00:09", peer_netns_fd=fd))  # fmt: skip
        finally:
            os.close(fd)

    await ns.run_in_netns(host_netns, work)
    rc, out, _ = await ns.exec_in_netns(f"{run_prefix}-inner", ["ip", "-o", "link", "show", "eth0"])
    assert rc == 0 and "mtu 1450" in out and "02:42:0a:00:00:09" in out
    rc, out, _ = await ns.exec_in_netns(host_netns, ["ip", "-o", "link", "show", host_end])
    assert rc == 0 and "mtu 1450" in out and ",UP" in out


def test_port_learning_body_is_an_af_bridge_protinfo() -> None:
    import socket as _socket
    import struct as _struct

    from orch.overlay import rtnl as _rtnl

    body = _rtnl.port_learning_body(7, False)
    family, _, index, _, _ = _struct.unpack("=BxHiII", body[:16])
    assert (family, index) == (_socket.AF_BRIDGE, 7)
    [(kind, payload)] = [(k, bytes(p)) for k, p in _rtnl.attrs(body, 16)]
    assert kind == _rtnl.IFLA_PROTINFO
    (raw_type,) = _struct.unpack("=H", body[18:20])  # the rtattr header after the ifinfomsg
    assert raw_type & _rtnl.NLA_F_NESTED
    [(inner, value)] = [(k, bytes(p)) for k, p in _rtnl.attrs(payload)]
    assert (inner, value) == (_rtnl.IFLA_BRPORT_LEARNING, b"\x00")
