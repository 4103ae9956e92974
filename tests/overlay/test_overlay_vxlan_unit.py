"""Overlay pieces that are pure: VXLAN/neighbour encoders, device names, peer diffs, nft scripts.

The same code runs on the real kernel in test_overlay_vxlan.py and test_overlay_ports.py.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import sys

import pytest

from orch.errors import NetworkError, ValidationError
from orch.overlay import names, rtnl
from orch.overlay.peers import PeerChanges, PeerEntry, PeerTable, diff
from orch.overlay.ports import (
    PortMapping,
    Rule,
    conflicts,
    delete_script,
    host_listeners,
    in_use,
    parse_comment,
    parse_rules,
    publish_script,
)
from orch.overlay.vxlan import OverlayNetwork

IP = ipaddress.IPv4Address

# -- rtnetlink encoders -----------------------------------------------------------------


def test_vxlan_body_carries_vni_local_port_and_static_flags() -> None:
    body = rtnl.vxlan_body(
        "orchx-vaaab", vni=4097, local=IP("10.99.0.1"), port=4789, mtu=1450, link=3, master=9
    )
    link = rtnl.parse_link(memoryview(body))
    assert (link.name, link.kind, link.master, link.vni, link.local) == (
        "orchx-vaaab",
        "vxlan",
        9,
        4097,
        "10.99.0.1",
    )
    top = dict(rtnl.attrs(body, 16))
    assert struct.unpack("=I", top[rtnl.IFLA_MTU]) == (1450,)
    info = dict(rtnl.attrs(top[rtnl.IFLA_LINKINFO]))
    data = {k: bytes(v) for k, v in rtnl.attrs(info[rtnl.IFLA_INFO_DATA])}
    assert data[rtnl.IFLA_VXLAN_PORT] == b"\x12\xb5"  # 4789, network byte order
    assert data[rtnl.IFLA_VXLAN_LEARNING] == b"\0"
    assert data[rtnl.IFLA_VXLAN_PROXY] == b"\1"
    assert struct.unpack("=I", data[rtnl.IFLA_VXLAN_LINK]) == (3,)
    unpinned = rtnl.vxlan_body("v", vni=1, local=IP("10.0.0.1"), port=4789, mtu=1450)
    info = dict(rtnl.attrs(dict(rtnl.attrs(unpinned, 16))[rtnl.IFLA_LINKINFO]))
    assert rtnl.IFLA_VXLAN_LINK not in dict(rtnl.attrs(info[rtnl.IFLA_INFO_DATA]))


def test_fdb_body_is_a_permanent_self_entry_with_a_remote() -> None:
    body = rtnl.fdb_body(7, "02:42:0A:0A:00:05", IP("10.99.0.2"))
    entry = rtnl.parse_neigh(memoryview(body))
    assert entry == rtnl.Neigh(
        socket.AF_BRIDGE, 7, rtnl.NUD_PERMANENT, rtnl.NTF_SELF, "10.99.0.2", "02:42:0a:0a:00:05"
    )
    whole = rtnl.parse_neigh(memoryview(rtnl.fdb_body(7, "02:42:0a:0a:00:05")))
    assert whole.dst is None and whole.lladdr == "02:42:0a:0a:00:05"  # a delete's shape


def test_arp_body_is_a_permanent_ipv4_neighbour() -> None:
    entry = rtnl.parse_neigh(memoryview(rtnl.arp_body(7, IP("10.10.0.5"), "02:42:0a:0a:00:05")))
    assert entry == rtnl.Neigh(
        socket.AF_INET, 7, rtnl.NUD_PERMANENT, 0, "10.10.0.5", "02:42:0a:0a:00:05"
    )
    assert rtnl.parse_neigh(memoryview(rtnl.arp_body(7, IP("10.10.0.5")))).lladdr is None


# -- device names -----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["o", "orch", "orch1ab2", "orcht1234"])
def test_overlay_names_fit_and_never_look_like_veths(prefix: str) -> None:
    for vni in (1, 4096, 4097, 32767, 32768, 1 << 20, names.VNI_MAX):
        bridge = names.overlay_bridge_name(prefix, vni)
        vxlan = names.overlay_vxlan_name(prefix, vni)
        assert len(bridge) <= names.IFNAMSIZ and len(vxlan) <= names.IFNAMSIZ
        assert bridge != vxlan
        for name in (bridge, vxlan):
            assert names.is_overlay_name(prefix, name)
            assert not names.is_veth_name(prefix, name)
    assert not names.is_overlay_name(prefix, names.bridge_name(prefix))
    assert not names.is_overlay_name(prefix, names.veth_name(prefix, "e", "front"))
    assert not names.is_overlay_name(prefix, f"{prefix}-o")
    assert not names.is_overlay_name("other", names.overlay_bridge_name(prefix, 4097))


def test_overlay_names_are_one_to_one_where_the_vni_fits() -> None:
    short = {names.overlay_code("orch", vni) for vni in range(4096, 4096 + 5000)}
    assert len(short) == 5000
    long = {names.overlay_code("orcht1234", vni) for vni in range(1, 32768, 7)}
    assert len(long) == len(range(1, 32768, 7))
    assert names.overlay_code("orch", names.VNI_MAX) != names.overlay_code("orch", 1)
    with pytest.raises(ValidationError, match="VNI"):
        names.overlay_code("orch", 0)
    with pytest.raises(ValidationError, match="VNI"):
        names.overlay_code("orch", 1 << 24)


def test_overlay_network_parse_checks_its_fields() -> None:
    net = OverlayNetwork.parse("front", 4097, "10.10.0.0/24", "10.10.0.1")
    assert (net.subnet.prefixlen, str(net.gateway)) == (24, "10.10.0.1")
    assert OverlayNetwork.parse("l2", 5, "10.10.0.0/24").gateway is None
    with pytest.raises(NetworkError, match="outside"):
        OverlayNetwork.parse("front", 4097, "10.10.0.0/24", "10.11.0.1")
    with pytest.raises(NetworkError, match="front"):
        OverlayNetwork.parse("front", 4097, "10.10.0.0/33")


# -- peers ------------------------------------------------------------------------------

A = PeerEntry("10.10.0.2", "02:42:0a:0a:00:02", "10.99.0.1", "a")
B = PeerEntry("10.10.0.3", "02:42:0A:0A:00:03", "10.99.0.2", "b")
C = PeerEntry("10.10.0.4/24", "02:42:0a:0a:00:04", "10.99.0.2", "c")


def test_peer_table_normalises_and_skips_this_node() -> None:
    table = PeerTable.of([A, B, C], local="10.99.0.1")
    assert dict(table.fdb) == {"02:42:0a:0a:00:03": "10.99.0.2", "02:42:0a:0a:00:04": "10.99.0.2"}
    assert dict(table.neigh) == {"10.10.0.3": "02:42:0a:0a:00:03", "10.10.0.4": "02:42:0a:0a:00:04"}
    # Malformed peers are skipped; the others still get their entries.
    bad_mac = PeerEntry("10.10.0.7", "02:42:zz:0a:00:02", "10.99.0.2")
    bad_node = PeerEntry("10.10.0.8", "02:42:0a:0a:00:08", "node1")
    assert PeerTable.of([bad_mac, bad_node, B]) == PeerTable.of([B])


def test_diff_writes_only_what_changed() -> None:
    before = PeerTable.of([A, B])
    assert diff(before, before) == PeerChanges() and not diff(before, before)
    moved = PeerEntry(B.address, B.mac, "10.99.0.3")
    changes = diff(before, PeerTable.of([moved, C]))
    assert changes.fdb_del == ("02:42:0a:0a:00:02",)
    assert changes.neigh_del == ("10.10.0.2",)
    assert changes.fdb_set == (
        ("02:42:0a:0a:00:03", "10.99.0.3"),  # moved to another node: replaced
        ("02:42:0a:0a:00:04", "10.99.0.2"),
    )
    assert changes.neigh_set == (("10.10.0.4", "02:42:0a:0a:00:04"),)  # B's neighbour stays
    gone = diff(before, PeerTable())
    assert (len(gone.fdb_del), len(gone.neigh_del), gone.fdb_set, gone.neigh_set) == (2, 2, (), ())


# -- published ports --------------------------------------------------------------------


def test_port_mapping_validates() -> None:
    assert PortMapping.from_json(PortMapping(8080, 80).to_json()) == PortMapping(8080, 80, "tcp")
    with pytest.raises(ValidationError, match="protocol"):
        PortMapping(8080, 80, "sctp")
    with pytest.raises(ValidationError, match="published port 0"):
        PortMapping(0, 80)


def test_publish_script_dnats_and_masquerades_per_endpoint() -> None:
    script = publish_script(
        "orchx",
        "task1",
        [PortMapping(8080, 80), PortMapping(5353, 53, "udp")],
        target_ip="10.10.0.5",
        address="10.99.0.1",
        stale=[Rule("prerouting", 12, "task1", "tcp", 8080)],
    )
    lines = script.splitlines()
    assert lines[0] == "add table ip orchx"
    assert "add chain ip orchx prerouting { type nat hook prerouting priority dstnat;" in lines[1]
    assert "delete rule ip orchx prerouting handle 12" in lines
    assert (
        'add rule ip orchx prerouting ip daddr 10.99.0.1 tcp dport 8080 dnat to 10.10.0.5:80 comment "task1 tcp/8080"'
        in lines
    )
    assert (
        'add rule ip orchx output ip daddr 10.99.0.1 udp dport 5353 dnat to 10.10.0.5:53 comment "task1 udp/5353"'
        in lines
    )
    assert (
        'add rule ip orchx postrouting ip daddr 10.10.0.5 tcp dport 80 ct status dnat masquerade comment "task1 tcp/8080"'
        in lines
    )
    # The stale rule goes before the new ones are added, in the same atomic script.
    assert lines.index("delete rule ip orchx prerouting handle 12") < lines.index(
        next(line for line in lines if line.startswith("add rule"))
    )
    anywhere = publish_script("t", "e", [PortMapping(1, 2)], target_ip="10.0.0.2", address=None)
    assert "prerouting fib daddr type local tcp dport 1 dnat to 10.0.0.2:2" in anywhere
    # The host's own connections to 127.0.0.1:<port> stay with the host's services.
    output = "output fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 1 dnat"
    assert output in anywhere


def test_rules_are_read_back_from_nft_json_by_their_comment() -> None:
    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "orchx", "handle": 1}},
            {"rule": {"table": "orchx", "chain": "prerouting", "handle": 4,
                      "comment": "task1 tcp/8080", "expr": []}},
            {"rule": {"table": "orchx", "chain": "output", "handle": 5, "expr": []}},
            {"rule": {"table": "orchx", "chain": "output", "handle": 6, "comment": "by hand"}},
            {"rule": {"table": "other", "chain": "output", "handle": 7, "comment": "t tcp/1"}},
        ]
    }  # fmt: skip
    rules = parse_rules(json.dumps(listing), "orchx")
    assert rules == [Rule("prerouting", 4, "task1", "tcp", 8080)]
    assert delete_script("orchx", rules) == "delete rule ip orchx prerouting handle 4\n"
    assert parse_comment("task1 udp/53") == ("task1", "udp", 53)
    assert parse_comment("task1") is None
    with pytest.raises(NetworkError, match="JSON"):
        parse_rules("not json", "orchx")


def test_a_port_published_by_another_endpoint_conflicts() -> None:
    rules = [Rule("prerouting", 4, "task1", "tcp", 8080), Rule("output", 5, "task1", "tcp", 8080)]
    assert conflicts(rules, "task1", [PortMapping(8080, 80)]) == []  # its own: a republish
    assert conflicts(rules, "task2", [PortMapping(8080, 80)]) == ["8080/tcp (by task1)"]
    assert conflicts(rules, "task2", [PortMapping(8080, 80, "udp")]) == []


PROC_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   2: 0100630A:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   3: 0100630A:9C40 0200630A:0016 01 00000000:00000000 00:00000000 00000000     0
"""


@pytest.mark.skipif(sys.byteorder != "little", reason="the sample is of a little-endian host")
def test_host_listeners_and_which_ports_the_dnat_would_take() -> None:
    listeners = host_listeners(PROC_TCP, "tcp")
    assert [(str(a), p) for a, p in listeners] == [
        ("127.0.0.1", 8080),
        ("0.0.0.0", 22),
        ("10.99.0.1", 3306),
    ]  # the established connection (st 01) is no listener
    assert in_use(listeners, 22, "10.99.0.1")  # every address
    assert in_use(listeners, 3306, "10.99.0.1")  # the published address
    assert not in_use(listeners, 3306, "10.99.0.2")  # another address of the host
    assert in_use(listeners, 3306, None)  # every local address is published
    assert not in_use(listeners, 8080, None)  # loopback is never caught
    assert not in_use(listeners, 40000, None)
    v6 = "  sl  local_address\n   0: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07\n"
    assert in_use(host_listeners(v6, "udp"), 53, "10.99.0.1")  # [::]:53 takes IPv4 too
    one_v6 = [(ipaddress.ip_address("2001:db8::1"), 8080)]
    assert not in_use(one_v6, 8080, None)  # the DNAT is IPv4's: one IPv6 address is not caught
