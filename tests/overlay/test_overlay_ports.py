"""Published ports on the real kernel: nft DNAT in a netns "host", a listener in a container.

The listener is Python's http.server inside the container's netns; clients are Python's
urllib in another host's netns (over the test underlay) and in the publishing host's own
netns. Rules are read back with ``nft``; forwarding is checked in the host netns and in
the root netns (which must stay as it was).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path

import pytest
from overlay_helpers import fetch, http_server, needs_netns, run_ok

from orch.errors import NetworkError, ValidationError
from orch.overlay import netns as ns
from orch.overlay.endpoints import EndpointManager
from orch.overlay.ports import PortMapping, PortPublisher
from orch.overlay.vxlan import OverlayNetwork

pytestmark = [pytest.mark.integration, needs_netns]

FRONT = OverlayNetwork.parse("front", 4097, "10.10.0.0/24", "10.10.0.1")


def root_ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


async def ip_forward_in(netns: str) -> str:
    return (
        await run_ok("ip", "netns", "exec", netns, "cat", "/proc/sys/net/ipv4/ip_forward")
    ).strip()


async def test_published_port_reaches_the_container_from_the_underlay_and_the_host(
    underlay, tmp_path: Path
) -> None:
    h1, h2 = await underlay(2)
    h1.join(FRONT)
    root_before = root_ip_forward()
    (tmp_path / "hello.txt").write_text("hello from web\n")
    await h1.manager.setup(
        "web", ["front"], addresses={"front": "10.10.0.2/24"}, ports=[PortMapping(8080, 80)]
    )
    container = h1.manager.netns_name("web")
    async with http_server(container, tmp_path) as server:
        assert await fetch(h2.netns, "http://10.99.0.1:8080/hello.txt") == "hello from web"
        assert await fetch(h1.netns, "http://10.99.0.1:8080/hello.txt") == "hello from web"
        assert await fetch(h2.netns, "http://10.99.0.1:8081/hello.txt") is None  # not published
        assert await ip_forward_in(h1.netns) == "1"
        assert await ip_forward_in(h2.netns) == "0"
        assert root_ip_forward() == root_before

        rules = await h1.manager.ports.rules()
        assert sorted(r.chain for r in rules) == ["output", "postrouting", "prerouting"]
        assert {(r.endpoint_id, r.protocol, r.published) for r in rules} == {("web", "tcp", 8080)}

        await h1.manager.teardown("web")
        assert await h1.manager.ports.rules() == []
        assert await fetch(h2.netns, "http://10.99.0.1:8080/hello.txt") is None
        server.kill()
        _, log = await server.communicate()
    # Masquerade: the container saw its clients come from its gateway.
    clients = {line.split()[0] for line in log.decode().splitlines() if "GET /hello.txt" in line}
    assert clients == {"127.0.0.1", "10.10.0.1"}


async def test_bridge_ports_conflicts_sweep_and_remove_all(underlay, tmp_path: Path) -> None:
    (h1,) = await underlay(1)
    await h1.manager.setup("one", ["bridge"], ports=[PortMapping(8080, 80)])
    await h1.manager.setup("gone", ["bridge"], ports=[PortMapping(9090, 90, "udp")])
    with pytest.raises(NetworkError, match="already published on this node: 8080/tcp"):
        await h1.manager.setup("two", ["bridge"], ports=[PortMapping(8080, 81)])
    assert "two" not in h1.manager.records()
    assert not ns.netns_exists(h1.manager.netns_name("two"))
    before = await h1.manager.ports.rules()
    await h1.manager.setup("one", ["bridge"], ports=[PortMapping(8080, 80)])  # idempotent
    assert await h1.manager.ports.rules() == before
    with pytest.raises(ValidationError, match="network 'none'"):
        await h1.manager.setup("mute", ["none"], ports=[PortMapping(1, 1)])

    # "gone" lost its record (a teardown that never finished, a wiped file): after a
    # restart, the sweep withdraws its ports and keeps those of "one".
    (h1.manager.records_dir / "gone.json").unlink()
    restarted = EndpointManager(h1.settings)
    report = await restarted.sweep()
    assert report.errors == ()
    assert {r.endpoint_id for r in await restarted.ports.rules()} == {"one"}

    await restarted.remove_all()
    tables = await run_ok("ip", "netns", "exec", h1.netns, "nft", "list", "tables")
    assert h1.settings.prefix not in tables
    assert await restarted.ports.remove_table() is False  # already gone: fine


@pytest.mark.parametrize("advertise", [True, False], ids=["advertise-address", "any-local"])
async def test_the_hosts_own_traffic_to_its_own_service_is_not_captured(
    underlay, tmp_path: Path, advertise: bool
) -> None:
    """A service of the host listens on the port number a container publishes: the host
    reaching it on 127.0.0.1 gets the host's service, other hosts get the container. With
    no advertise address the DNAT matches every local address (``fib daddr type local``),
    loopback excepted for the host's own connections."""
    h1, h2 = await underlay(2)
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "hello.txt").write_text("from the container\n")
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "hello.txt").write_text("from the host\n")
    info = await h1.manager.setup("web", ["bridge"])
    publisher = PortPublisher(dataclasses.replace(h1.settings, host_address=None))
    if advertise:
        publisher = h1.manager.ports
    async with (
        http_server(h1.netns, tmp_path / "host", port=8080, bind="127.0.0.1"),
        http_server(h1.manager.netns_name("web"), tmp_path / "web"),
    ):
        await publisher.publish("web", [PortMapping(8080, 80)], info.addresses["bridge"])
        assert await fetch(h1.netns, "http://127.0.0.1:8080/hello.txt") == "from the host"
        assert await fetch(h2.netns, "http://10.99.0.1:8080/hello.txt") == "from the container"
        # The host reaching its published address is a client of the published port.
        assert await fetch(h1.netns, "http://10.99.0.1:8080/hello.txt") == "from the container"
    await publisher.unpublish("web")
    await h1.manager.teardown("web")


async def test_a_port_a_host_service_listens_on_is_refused(underlay, tmp_path: Path) -> None:
    """sshd on 0.0.0.0:22 or a database on the node's address: the DNAT would take its
    clients, so the endpoint is refused and nothing is published."""
    (h1,) = await underlay(1)
    (tmp_path / "hello.txt").write_text("from the host\n")
    async with http_server(h1.netns, tmp_path, port=8081):
        with pytest.raises(NetworkError, match=r"in use by a service of this node: 8081/tcp$"):
            await h1.manager.setup("web", ["bridge"], ports=[PortMapping(8081, 80)])
        assert await h1.manager.ports.rules() == []
        assert await fetch(h1.netns, "http://10.99.0.1:8081/hello.txt") == "from the host"
    async with http_server(h1.netns, tmp_path, port=8081, bind="10.99.0.1"):
        with pytest.raises(NetworkError, match="in use by a service of this node"):
            await h1.manager.setup("web", ["bridge"], ports=[PortMapping(8081, 80)])


AGENT_IN_ITS_OWN_NETNS = """
import asyncio, json, sys
from pathlib import Path
from orch.overlay import netns as ns
from orch.overlay.endpoints import EndpointManager
from orch.overlay.links import KernelNet
from orch.overlay.ports import PortMapping, PortPublisher
from orch.overlay.settings import NetworkSettings
from orch.overlay.vxlan import OverlayDriver, OverlayNetwork

async def main():
    s = NetworkSettings(prefix=sys.argv[1], state_dir=Path(sys.argv[2]), host_address=sys.argv[3])
    m = EndpointManager(s)
    d = OverlayDriver(s, KernelNet(), OverlayNetwork.parse("front", 4097, "10.10.0.0/24", "10.10.0.1"))
    m.register_driver(d)
    await m.setup("web", ["front"], addresses={"front": "10.10.0.2"}, ports=[PortMapping(8080, 80)])
    rules = [r.endpoint_id for r in await m.ports.rules()]
    _, links, _ = await ns.run_ip(["-o", "link"])
    await m.remove_all()
    _, tables, _ = await ns.run_command(["nft", "list", "tables"])
    print(json.dumps({"rules": rules, "links": links, "tables": tables, "vxlan": d.vxlan}))

asyncio.run(main())
"""


async def test_agent_in_its_own_netns_publishes_there(underlay, tmp_path: Path) -> None:
    """host_netns None: the overlay devices and the nft table are made in the netns the
    agent process runs in (started with nsenter, as the local cluster starts agents)."""
    (h1,) = await underlay(1)
    prefix = h1.settings.prefix
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={ns.netns_path(h1.netns)}", sys.executable, "-c",
        AGENT_IN_ITS_OWN_NETNS, prefix, str(tmp_path / "agent"), h1.address,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["rules"] == ["web", "web", "web"]
    assert result["vxlan"] in result["links"]
    assert prefix not in result["tables"]  # remove_all took the table
    _, root_tables, _ = await ns.run_command(["nft", "list", "tables"])
    assert prefix not in root_tables
    _, root_links, _ = await ns.run_ip(["-o", "link"])
    assert prefix not in root_links
