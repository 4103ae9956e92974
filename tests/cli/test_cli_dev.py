"""`orch dev up`'s summary: what a person needs next, from the cluster's record."""

from __future__ import annotations

from orch.cli.commands.dev import up_summary
from orch.localcluster.cluster import ClusterRecord, ClusterSettings


def test_the_summary_names_managers_hosts_underlay_and_registry() -> None:
    record = ClusterRecord(
        prefix="orchabc",
        state_dir="/var/lib/orch/dev",
        managers=["10.212.3.1:4000"],
        registry="127.0.0.1:5055",
        registry_mirror="10.212.3.1:5055",
        underlay={"bridge": "orchabc-ul", "subnet": "10.212.3.0/24", "gateway": "10.212.3.1"},
        agents=[
            {"hostname": "node1", "address": "10.212.3.11", "netns": "orchabc-h1"},
            {"hostname": "node2", "address": "10.212.3.12", "netns": "orchabc-h2"},
        ],
    )
    assert up_summary(record) == (
        "local cluster orchabc is up (state in /var/lib/orch/dev)\n"
        "managers:  10.212.3.1:4000\n"
        "nodes:     node1  10.212.3.11  (netns orchabc-h1)\n"
        "           node2  10.212.3.12  (netns orchabc-h2)\n"
        "underlay:  10.212.3.0/24 on bridge orchabc-ul\n"
        "registry:  127.0.0.1:5055 (served at 10.212.3.1:5055)\n"
    )


def test_a_cluster_has_three_hosts_unless_told_otherwise() -> None:
    assert ClusterSettings().nodes == 3
