"""The pure parts of the local cluster's hosts: names, addresses, the subnet and prefix
choice that lets two runs coexist. (The kernel side is tested in
tests/integration/test_localcluster.py.)"""

from __future__ import annotations

import pytest

from orch.errors import NetworkError
from orch.localcluster import hosts


def test_names_and_addresses_of_a_host() -> None:
    assert hosts.bridge_name("orchabc") == "orchabc-ul"
    assert hosts.host_netns("orchabc", 2) == "orchabc-h2"
    assert hosts.host_veth("orchabc", 2) == "orchabc-v2"
    assert hosts.gateway_address("10.212.7.0/24") == "10.212.7.1"
    assert hosts.host_address("10.212.7.0/24", 1) == "10.212.7.11"
    assert hosts.host_address("10.212.7.0/24", hosts.MAX_HOSTS) == "10.212.7.254"
    for bad in (0, hosts.MAX_HOSTS + 1):
        with pytest.raises(NetworkError):
            hosts.host_address("10.212.7.0/24", bad)


def test_commands_enter_only_the_network_namespace() -> None:
    assert hosts.nsenter_argv("orchabc-h1", ["ip", "route"]) == [
        "nsenter", "--net=/run/netns/orchabc-h1", "ip", "route",
    ]  # fmt: skip


def test_the_subnet_is_one_no_address_of_the_machine_lies_in() -> None:
    used = ["127.0.0.1", "192.0.2.2", "10.212.7.1", "10.212.8.1", "10.213.7.1"]
    assert hosts.pick_subnet_index(used, seed=7) == 9
    assert hosts.pick_subnet_index(used, seed=6) == 6
    assert hosts.pick_subnet_index(["10.212.255.1"], seed=255) == 0  # wraps around
    with pytest.raises(NetworkError, match="in use"):
        hosts.pick_subnet_index([f"10.212.{k}.1" for k in range(256)], seed=0)


def test_a_prefix_is_in_use_when_any_netns_or_link_starts_with_it() -> None:
    assert hosts.prefix_in_use("orchabc", ["eth0", "orchabc-ul"], [])
    assert hosts.prefix_in_use("orchabc", [], ["orchabc1-x7k2"])  # an agent's container
    assert not hosts.prefix_in_use("orchabc", ["orchabd-ul", "eth0"], ["orchab-h1"])
