"""Service discovery name rules as pure functions: which names are ours, what an asker on
some networks may see, empty answers versus NXDOMAIN, updates of the record table, and
round-robin rotation."""

from __future__ import annotations

from orch.agent.dns import parse_upstreams, split_host_port
from orch.agent.dnsnames import Outcome, RecordTable, Rotator, resolve
from orch.proto import dispatcher_pb2


def records(network: str, *endpoints: tuple[str, int, str, bool]) -> dispatcher_pb2.DnsRecords:
    return dispatcher_pb2.DnsRecords(
        network=network,
        endpoints=[
            dispatcher_pb2.DnsEndpoint(
                service=s, slot=slot, task_id=f"{s}{slot}", address=a, answerable=ok
            )
            for s, slot, a, ok in endpoints
        ],
    )


def table() -> RecordTable:
    t = RecordTable()
    t.apply(
        [
            records(
                "front",
                ("web", 1, "10.10.0.12", True),
                ("web", 2, "10.10.0.3", True),
                ("web", 3, "10.10.0.4", False),  # starting or unhealthy
                ("api", 1, "10.10.0.9", False),
            ),
            records("back", ("db", 1, "10.10.1.2", True), ("web", 1, "10.10.1.7", True)),
            records("bridge", ("cache", 1, "172.18.0.2", True)),
        ],
        full=True,
    )
    return t


def answer(t: RecordTable, asker, name: str) -> tuple[str, ...] | str:
    r = resolve(t, asker, name)
    return r.addresses if r.outcome is Outcome.ANSWER else r.outcome.value


def test_a_service_resolves_to_its_answerable_tasks_sorted_by_address() -> None:
    t = table()
    assert answer(t, ["front"], "web") == ("10.10.0.3", "10.10.0.12")
    assert answer(t, ["front"], "tasks.web") == ("10.10.0.3", "10.10.0.12")


def test_a_slot_resolves_to_its_task() -> None:
    t = table()
    assert answer(t, ["front"], "web.2") == ("10.10.0.3",)
    assert answer(t, ["front"], "web.3") == ()  # exists, not answerable: empty, not NXDOMAIN
    assert answer(t, ["front"], "web.9") == "nxdomain"


def test_a_service_that_exists_but_has_nothing_ready_is_empty_not_nxdomain() -> None:
    assert answer(table(), ["front"], "api") == ()


def test_services_on_networks_the_asker_is_not_on_are_nxdomain() -> None:
    t = table()
    assert answer(t, ["front"], "db") == "nxdomain"
    assert answer(t, ["front"], "cache") == "nxdomain"
    assert answer(t, ["front"], "db.back") == "nxdomain"  # a network it is not on
    assert answer(t, ["back"], "db") == ("10.10.1.2",)
    assert answer(t, [], "web") == "nxdomain"  # network mode none


def test_qualified_names_look_only_at_that_network() -> None:
    t = table()
    both = ["front", "back"]
    assert answer(t, both, "web") == ("10.10.0.3", "10.10.0.12")  # first network wins
    assert answer(t, both, "web.back") == ("10.10.1.7",)
    assert answer(t, both, "tasks.web.back") == ("10.10.1.7",)
    assert answer(t, both, "web.1.back") == ("10.10.1.7",)
    assert answer(t, both, "api.back") == "nxdomain"
    assert answer(t, ["back", "front"], "web") == ("10.10.1.7",)  # in the asker's order
    assert answer(t, both, "nonsense.name.front") == "nxdomain"


def test_the_node_listener_sees_every_network_of_the_node() -> None:
    t = table()
    assert answer(t, None, "db") == ("10.10.1.2",)
    assert answer(t, None, "cache") == ("172.18.0.2",)
    assert answer(t, None, "web") == ("10.10.1.7",)  # networks in name order: back first
    assert answer(t, None, "web.front") == ("10.10.0.3", "10.10.0.12")


def test_which_names_are_forwarded() -> None:
    t = table()
    assert answer(t, ["front"], "example.com") == "forward"
    assert answer(t, ["front"], "www.example.com") == "forward"
    assert answer(t, ["front"], "web.example") == "forward"
    assert answer(t, ["front"], "") == "forward"  # the root
    # Ours, never forwarded: single labels, tasks.<x>, names ending in digits.
    assert answer(t, ["front"], "nosuchservice") == "nxdomain"
    assert answer(t, ["front"], "tasks.nosuch") == "nxdomain"
    assert answer(t, ["front"], "tasks.web.3") == "nxdomain"


def test_updates_replace_networks_whole_and_full_sets_drop_the_rest() -> None:
    t = table()
    before = t.version
    t.apply([records("front", ("web", 4, "10.10.0.20", True))])
    assert t.version > before
    assert answer(t, ["front"], "web") == ("10.10.0.20",)
    assert answer(t, ["back"], "db") == ("10.10.1.2",)  # untouched
    t.apply([], ["back"])
    assert answer(t, ["back"], "db") == "nxdomain"
    t.apply([records("bridge")], full=True)
    assert t.networks() == ["bridge"]
    assert answer(t, ["front"], "web") == "nxdomain"


def test_names_are_case_insensitive_via_the_table() -> None:
    t = RecordTable()
    t.apply([records("Front", ("Web", 1, "10.10.0.2", True))], full=True)
    assert answer(t, ["front"], "web") == ("10.10.0.2",)


def test_rotation_starts_one_later_per_query_and_per_name() -> None:
    r = Rotator()
    addresses = ("a", "b", "c")
    got = [r.rotate("front/web", addresses) for _ in range(4)]
    assert got == [("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b"), ("a", "b", "c")]
    assert r.rotate("front/api", addresses) == ("a", "b", "c")  # its own counter
    assert r.rotate("front/web", ("x",)) == ("x",)


def test_upstreams_come_from_resolv_conf_without_our_own_listener() -> None:
    text = "# c\nsearch example\nnameserver 10.0.0.53\nnameserver 127.0.0.11\nnameserver fe80::1%eth0\nnameserver bad\n"
    assert parse_upstreams(text) == ["10.0.0.53", "fe80::1"]
    assert parse_upstreams(text, exclude=["10.0.0.53"]) == ["fe80::1"]


def test_host_port_forms() -> None:
    assert split_host_port("10.0.0.1") == ("10.0.0.1", 53)
    assert split_host_port("10.0.0.1:5353") == ("10.0.0.1", 5353)
    assert split_host_port("[fe80::1]:54") == ("fe80::1", 54)
    assert split_host_port("fe80::1") == ("fe80::1", 53)


def test_names_under_any_cluster_network_are_ours() -> None:
    t = table()
    assert answer(t, ["front"], "db.elsewhere") == "forward"
    t.set_cluster_networks(["front", "back", "Elsewhere"])
    assert answer(t, ["front"], "db.elsewhere") == "nxdomain"  # never leaked upstream
    assert answer(t, None, "db.elsewhere") == "nxdomain"
