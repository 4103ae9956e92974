"""EndpointManager logic on an in-memory HostNet: validation, rollback, records, sweep plans.

The same manager runs on the real kernel in test_overlay_endpoints.py; here the fake lets
failure paths (a plug that fails half-way) and races be driven exactly.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from orch import model
from orch.errors import NetworkError, ValidationError
from orch.overlay import names
from orch.overlay.driver import Attachment
from orch.overlay.endpoints import (
    READY,
    SETUP,
    EndpointManager,
    EndpointRecord,
    plan_sweep,
)
from orch.overlay.ipam import IpamStore
from orch.overlay.links import LinkInfo, VethPlug
from orch.overlay.settings import NetworkSettings


class FakeNet:
    """HostNet in memory: just enough kernel to check what the manager leaves behind."""

    def __init__(self) -> None:
        self.netns: set[str] = set()
        self.links: dict[str, LinkInfo] = {}
        self.plugs: dict[str, VethPlug] = {}
        self.fail_plug_of: str | None = None
        self._index = 1

    async def create_netns(self, name: str) -> str:
        self.netns.add(name)
        return f"/run/netns/{name}"

    async def delete_netns(self, name: str) -> bool:
        existed = name in self.netns
        self.netns.discard(name)
        return existed

    def list_netns(self, prefix: str) -> list[str]:
        return sorted(n for n in self.netns if n.startswith(prefix))

    def netns_exists(self, name: str) -> bool:
        return name in self.netns

    async def loopback_up(self, netns: str) -> None:
        assert netns in self.netns

    async def list_links(self) -> list[LinkInfo]:
        return list(self.links.values())

    def _add(self, name: str, kind: str, master: int | None = None) -> None:
        self._index += 1
        self.links[name] = LinkInfo(name, kind, self._index, master)

    async def ensure_bridge(self, name: str, address: ipaddress.IPv4Interface, mtu: int) -> None:
        if name not in self.links:
            self._add(name, "bridge")

    async def delete_link(self, name: str) -> bool:
        self.plugs.pop(name, None)
        return self.links.pop(name, None) is not None

    async def plug_veth(self, plug: VethPlug) -> None:
        assert plug.netns in self.netns
        if self.fail_plug_of == plug.netns:
            raise NetworkError(f"plug into {plug.netns} failed (injected)")
        master = self.links[plug.master].index if plug.master else None
        self._add(plug.host_ifname, "veth", master)
        self.plugs[plug.host_ifname] = plug


class StaticDriver:
    """A second network that takes cluster-allocated addresses, as overlays will."""

    def __init__(self, net: FakeNet, network: str) -> None:
        self.net = net
        self._network = network
        self.held: dict[str, str] = {}

    @property
    def network(self) -> str:
        return self._network

    async def ensure(self) -> None:
        pass

    async def attach(
        self, endpoint_id, netns_name, *, ifname="eth0", host_ifname=None, address=None, mac=None
    ):
        assert address is not None and host_ifname is not None
        iface = ipaddress.IPv4Interface(address)
        await self.net.plug_veth(
            VethPlug(host_ifname, netns_name, ifname, iface, model.mac_for(iface.ip), 1450)
        )
        self.held[endpoint_id] = address
        gw = str(next(iface.network.hosts()))
        return Attachment(self._network, address, model.mac_for(iface.ip), gw, ifname, host_ifname)

    async def detach(self, endpoint_id, host_ifname=None):
        if host_ifname:
            await self.net.delete_link(host_ifname)
        self.held.pop(endpoint_id, None)

    async def adopt(self, endpoint_id, attachment):
        return attachment.host_ifname in self.net.links

    def owners(self):
        return set(self.held)

    async def release(self, endpoint_id):
        self.held.pop(endpoint_id, None)

    async def remove(self):
        pass


@pytest.fixture
def fake() -> FakeNet:
    return FakeNet()


@pytest.fixture
def unit_settings(tmp_path: Path) -> NetworkSettings:
    return NetworkSettings(prefix="orchu", state_dir=tmp_path, host_address="192.0.2.10")


@pytest.fixture
def mgr(unit_settings: NetworkSettings, fake: FakeNet) -> EndpointManager:
    return EndpointManager(unit_settings, net=fake)


def ipam_file(settings: NetworkSettings) -> IpamStore:
    return IpamStore(settings.network_dir / "ipam" / "bridge.json", settings.bridge_subnet)


@pytest.mark.parametrize(
    ("networks", "error"),
    [
        ([], ValidationError),
        (["host", "bridge"], ValidationError),
        (["none", "bridge"], ValidationError),
        (["bridge", "bridge"], ValidationError),
        (["nosuchnet"], NetworkError),
    ],
)
async def test_bad_network_lists(mgr: EndpointManager, networks: list[str], error: type) -> None:
    with pytest.raises(error):
        await mgr.setup("t1", networks)


async def test_host_mode_reports_host_address_and_makes_nothing(
    mgr: EndpointManager, fake: FakeNet
) -> None:
    info = await mgr.setup("t1", ["host"])
    assert info.netns_path is None
    assert info.addresses == {"host": "192.0.2.10"}
    assert fake.netns == set() and fake.links == {}


async def test_failed_plug_leaves_nothing_behind(
    mgr: EndpointManager, fake: FakeNet, unit_settings: NetworkSettings
) -> None:
    fake.fail_plug_of = mgr.netns_name("t1")
    with pytest.raises(NetworkError, match="injected"):
        await mgr.setup("t1", ["bridge"])
    assert fake.netns == set()
    assert [link.kind for link in fake.links.values()] == ["bridge"]
    assert mgr.records() == {}
    assert ipam_file(unit_settings).owners() == set()


async def test_setup_is_idempotent_and_redoes_on_other_networks(
    mgr: EndpointManager, fake: FakeNet
) -> None:
    first = await mgr.setup("t1", ["bridge"])
    assert await mgr.setup("t1", ["bridge"]) == first
    mgr.register_driver(StaticDriver(fake, "net1"))
    again = await mgr.setup("t1", ["bridge", "net1"], addresses={"net1": "10.50.0.7/24"})
    assert [(a.network, a.ifname) for a in again.attachments] == [
        ("bridge", "eth0"),
        ("net1", "eth1"),
    ]
    assert again.addresses["net1"] == "10.50.0.7"
    # Another network list means teardown + setup; the bridge veth keeps its name.
    assert again.attachments[0].host_ifname == first.attachments[0].host_ifname
    assert len([lk for lk in fake.links.values() if lk.kind == "veth"]) == 2


async def test_taken_veth_name_is_salted(
    mgr: EndpointManager, unit_settings: NetworkSettings
) -> None:
    clash = names.veth_name("orchu", "new", "bridge", 0)
    other = EndpointRecord("other", ["bridge"], "orchu-other", {"bridge": clash}, state=READY)
    mgr._save(other)
    info = await mgr.setup("new", ["bridge"])
    assert info.attachments[0].host_ifname == names.veth_name("orchu", "new", "bridge", 1)


async def test_teardown_twice_and_of_unknown_endpoints(mgr: EndpointManager, fake: FakeNet) -> None:
    await mgr.setup("t1", ["bridge"])
    await mgr.teardown("t1")
    await mgr.teardown("t1")
    await mgr.teardown("never-seen")
    assert fake.netns == set() and mgr.records() == {}


async def test_adopt_tears_down_a_broken_endpoint(
    unit_settings: NetworkSettings, fake: FakeNet
) -> None:
    first = EndpointManager(unit_settings, net=fake)
    info = await first.setup("t1", ["bridge"])
    second = EndpointManager(unit_settings, net=fake)
    assert await second.adopt("t1") == info
    await fake.delete_link(info.attachments[0].host_ifname)
    assert await second.adopt("t1") is None
    assert fake.netns == set() and second.records() == {}
    assert await second.adopt("t1") is None


async def test_sweep_finishes_an_interrupted_setup(
    unit_settings: NetworkSettings, fake: FakeNet
) -> None:
    crashed = EndpointManager(unit_settings, net=fake)
    rec = crashed._plan("t1", ("bridge",))
    crashed._save(rec)
    await fake.create_netns(rec.netns or "")
    report = await EndpointManager(unit_settings, net=fake).sweep()
    assert report.endpoints == ("t1",) and report.errors == ()
    assert fake.netns == set()


async def test_a_torn_record_counts_as_an_unfinished_setup(
    mgr: EndpointManager, fake: FakeNet, unit_settings: NetworkSettings
) -> None:
    """Records are not fsync'ed: after a machine crash one may be torn. It must not block
    the endpoint: it is torn down under default names, then set up afresh."""
    first = await mgr.setup("t1", ["bridge"])
    mgr._record_path("t1").write_text('{"endpoint_id": "t1", "netw')
    assert mgr.info("t1") is None
    assert mgr.records()["t1"].state == SETUP
    again = await mgr.setup("t1", ["bridge"])
    (old,), (new,) = first.attachments, again.attachments
    assert new.host_ifname == old.host_ifname  # the old veth was found and removed
    assert len([lk for lk in fake.links.values() if lk.kind == "veth"]) == 1
    assert new.ip != old.ip  # the teardown released the old address; next-fit moved on
    assert ipam_file(unit_settings).owners() == {"t1"}
    await mgr.teardown("t1")
    assert fake.netns == set() and mgr.records() == {}
    assert ipam_file(unit_settings).owners() == set()


async def test_ready_record_of_a_vanished_netns_is_set_up_afresh(
    mgr: EndpointManager, fake: FakeNet
) -> None:
    """A machine crash leaves records whose netns are gone: setup must not trust them."""
    info = await mgr.setup("t1", ["bridge"])
    fake.netns.clear()
    fake.links = {n: lk for n, lk in fake.links.items() if lk.kind == "bridge"}
    again = await mgr.setup("t1", ["bridge"])
    assert fake.netns == {mgr.netns_name("t1")}
    assert again.attachments[0].host_ifname in fake.links
    assert again.netns_path == info.netns_path


class SlowDeletes(FakeNet):
    """Counts link deletes in flight; each yields to the loop a few times."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0

    async def delete_link(self, name: str) -> bool:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        for _ in range(5):
            await asyncio.sleep(0)  # a yield, not a wait for state
        self.in_flight -= 1
        return await super().delete_link(name)


async def test_sweep_tears_endpoints_down_side_by_side_within_the_limit(
    unit_settings: NetworkSettings,
) -> None:
    net = SlowDeletes()
    mgr = EndpointManager(replace(unit_settings, sweep_concurrency=3), net=net)
    for i in range(8):
        await mgr.setup(f"t{i}", ["bridge"])
    report = await mgr.sweep(live=())
    assert len(report.endpoints) == 8 and report.errors == ()
    assert net.most == 3
    assert net.netns == set() and mgr.records() == {}


def test_sweep_concurrency_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="sweep concurrency"):
        NetworkSettings(state_dir=tmp_path, sweep_concurrency=0)


def _rec(eid: str, state: str = READY, ifname: str | None = None) -> EndpointRecord:
    host = {"bridge": ifname} if ifname else {}
    return EndpointRecord(eid, ["bridge"], f"orchu-{eid}", host, state=state)


def test_plan_sweep_claims_and_leftovers() -> None:
    v = [names.veth_name("orchu", e, "bridge") for e in ("a", "b", "c")]
    links = [LinkInfo(n, "veth", i) for i, n in enumerate(v)] + [
        LinkInfo("orchu-br", "bridge", 10),
        LinkInfo(names.veth_name("orchv", "a", "bridge"), "veth", 11),  # another agent's
        LinkInfo("eth0", "veth", 12),
    ]
    plan = plan_sweep(
        "orchu",
        netns_names=["orchu-a", "orchu-b", "orchu-c", "orchu-d", "orchuhost"],
        links=links,
        owners={"bridge": {"a", "b", "c", "z"}},
        records={"a": _rec("a", ifname=v[0]), "b": _rec("b", SETUP, v[1])},
        busy={"d"},
        live=None,
    )
    assert plan.endpoints == ("b",)  # unfinished and idle
    assert plan.netns == ("orchu-c",)  # no record, not busy; the host netns is not ours
    assert plan.links == (v[2],)
    assert plan.owners == (("bridge", "c"), ("bridge", "z"))


def test_plan_sweep_with_live_set() -> None:
    records = {e: _rec(e) for e in ("a", "b", "c")}
    plan = plan_sweep(
        "orchu", netns_names=[], links=[], owners={}, records=records, busy={"c"}, live={"a"}
    )
    assert plan.endpoints == ("b",)  # c is busy: never touched


def test_record_json_round_trip() -> None:
    att = Attachment("bridge", "10.0.0.2/24", "02:42:0a:00:00:02", "10.0.0.1", "eth0", "orchu-x")
    rec = replace(_rec("a", ifname="orchu-x"), attachments=[att])
    assert EndpointRecord.from_json(rec.to_json()) == rec
