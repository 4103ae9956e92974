"""Published ports (Swarm's ``mode: host``): DNAT from the node's address to a container.

A task's ``ports`` make ``<advertise address>:<published>`` (from the underlay, and from
the host itself) reach ``<task's first address>:<target>``. nftables does it, in one
table per agent, ``table ip <prefix>``, with three NAT base chains:

- ``prerouting`` and ``output``: ``ip daddr <advertise> tcp dport <published> dnat to
  <task ip>:<target>`` (without an advertise address: ``fib daddr type local``, every
  local address, as Docker matches; in ``output`` loopback excepted). The host's own
  connections are caught only towards the published address: a connection to
  127.0.0.1:<published> (or, with an advertise address, to any other local address)
  still reaches the host's own service on that port number. Ports of the host's own
  services that the DNAT would capture (ssh, etcd, the manager) are refused by the
  manager at apply time (manager/controlapi/hosts.py);
- ``postrouting``: ``ct status dnat ... masquerade`` towards the task, so the container
  sees the connection come from its gateway (the bridge's address). Containers have no
  default route (traffic cannot leave the node), so without this they could not answer
  a client on the underlay; it is what Docker's userland proxy achieves too. No NAT goes
  to the outside.

Every rule carries the comment ``"<endpoint id> <proto>/<published>"``: that is how a
task's rules are found again (``nft -j -a list`` gives their handles) and deleted by
handle, how a port already published by another task is refused, and how a sweep finds
rules whose endpoint is gone. Changes go to nft as one script, so they apply atomically.
A port a service of the host listens on (read from /proc/net in the host netns) where
the DNAT would catch its clients is refused too: the task fails saying so, rather than
cutting off sshd or a database.
Forwarding (``net.ipv4.ip_forward``) is turned on in the agent's host netns with the
first published port: DNAT to a container on a local bridge is forwarding.

``nft`` runs as a subprocess (in the host netns through ``nsenter --net`` when the agent
names one): a few milliseconds, paid only by tasks that publish ports.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import sys
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from orch.errors import NetworkError, ValidationError
from orch.overlay import netns as ns
from orch.overlay.settings import NetworkSettings

log = logging.getLogger(__name__)

PROTOCOLS = ("tcp", "udp")
CHAINS = {
    "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
}
COMMENT_MAX = 128
"""nftables keeps at most 128 bytes of a rule's comment."""


@dataclass(frozen=True)
class PortMapping:
    """One published port of a task (specs.proto ``PortConfig``, mode host)."""

    published: int
    target: int
    protocol: str = "tcp"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValidationError(f"port protocol {self.protocol!r}: want tcp or udp")
        for what, port in (("published", self.published), ("target", self.target)):
            if not 1 <= port <= 65535:
                raise ValidationError(f"{what} port {port}: want 1-65535")

    def to_json(self) -> dict[str, object]:
        return {"published": self.published, "target": self.target, "protocol": self.protocol}

    @classmethod
    def from_json(cls, data: dict) -> PortMapping:
        return cls(int(data["published"]), int(data["target"]), str(data.get("protocol", "tcp")))


@dataclass(frozen=True)
class Rule:
    """One of our rules, as read back from nft."""

    chain: str
    handle: int
    endpoint_id: str
    protocol: str
    published: int


def comment_of(endpoint_id: str, port: PortMapping) -> str:
    text = f"{endpoint_id} {port.protocol}/{port.published}"
    if len(text.encode()) > COMMENT_MAX:
        raise ValidationError(f"endpoint id {endpoint_id!r} is too long to publish ports")
    return text


def parse_comment(text: str) -> tuple[str, str, int] | None:
    """(endpoint id, protocol, published port) from a rule comment, None if not ours."""
    endpoint_id, _, port = text.partition(" ")
    protocol, _, number = port.partition("/")
    if not endpoint_id or protocol not in PROTOCOLS or not number.isdigit():
        return None
    return endpoint_id, protocol, int(number)


def parse_rules(nft_json: str, table: str) -> list[Rule]:
    """Our rules in the output of ``nft -j -a list table ip <table>``. Pure."""
    try:
        items = json.loads(nft_json).get("nftables", [])
    except (ValueError, AttributeError) as exc:
        raise NetworkError(f"nft printed JSON we cannot read: {exc}") from exc
    rules = []
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not rule or rule.get("table") != table:
            continue
        parsed = parse_comment(str(rule.get("comment", "")))
        if parsed is not None:
            rules.append(Rule(str(rule["chain"]), int(rule["handle"]), *parsed))
    return rules


def _match(address: str | None, chain: str) -> str:
    """Which destinations a chain's DNAT catches: the advertise address, else every
    local one; the host's own traffic (``output``) to loopback never, as the host's
    own services on 127.0.0.1 are not the container's."""
    if address:
        return f"ip daddr {address}"
    if chain == "output":
        return "fib daddr type local ip daddr != 127.0.0.0/8"
    return "fib daddr type local"


def publish_script(
    table: str,
    endpoint_id: str,
    ports: Sequence[PortMapping],
    *,
    target_ip: str,
    address: str | None,
    stale: Iterable[Rule] = (),
) -> str:
    """The nft script that (re)publishes ``ports`` of one endpoint: the table and chains
    (``add`` is idempotent), deletes of ``stale`` rules, then the new rules. Pure."""
    lines = [f"add table ip {table}"]
    lines += [f"add chain ip {table} {chain} {{ {spec} }}" for chain, spec in CHAINS.items()]
    lines += [f"delete rule ip {table} {r.chain} handle {r.handle}" for r in stale]
    for port in ports:
        note = json.dumps(comment_of(endpoint_id, port))
        proto = port.protocol
        dnat = f"{proto} dport {port.published} dnat to {target_ip}:{port.target} comment {note}"
        for chain in ("prerouting", "output"):
            lines.append(f"add rule ip {table} {chain} {_match(address, chain)} {dnat}")
        lines.append(
            f"add rule ip {table} postrouting ip daddr {target_ip} {proto} dport {port.target} "
            f"ct status dnat masquerade comment {note}"
        )
    return "\n".join(lines) + "\n"


def delete_script(table: str, rules: Iterable[Rule]) -> str:
    """The nft script deleting ``rules`` by handle. Pure."""
    return "".join(f"delete rule ip {table} {r.chain} handle {r.handle}\n" for r in rules)


def conflicts(rules: Iterable[Rule], endpoint_id: str, ports: Iterable[PortMapping]) -> list[str]:
    """Ports of ``ports`` another endpoint already publishes, as "8080/tcp (by <id>)"."""
    taken = {
        (r.protocol, r.published): r.endpoint_id for r in rules if r.endpoint_id != endpoint_id
    }
    return [
        f"{p.published}/{p.protocol} (by {taken[(p.protocol, p.published)]})"
        for p in ports
        if (p.protocol, p.published) in taken
    ]


TCP_LISTEN = "0A"
"""The state column of a listening socket in /proc/net/tcp (include/net/tcp_states.h)."""
ProcAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def proc_address(text: str) -> ProcAddress:
    """An address as /proc/net/{tcp,udp}[6] prints it: 32-bit words in host byte order."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


def host_listeners(proc_net: str, protocol: str) -> list[tuple[ProcAddress, int]]:
    """(local address, port) of each listening TCP socket, or unconnected (bound) UDP
    socket, in the text of /proc/net/tcp[6] or udp[6]. Pure."""
    found = []
    for line in proc_net.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        local, remote, state = fields[1], fields[2], fields[3]
        if protocol == "tcp" and state != TCP_LISTEN:
            continue
        if protocol == "udp" and remote.partition(":")[2] != "0000":
            continue  # a connected client socket, not a service
        host, _, port = local.partition(":")
        found.append((proc_address(host), int(port, 16)))
    return found


def in_use(listeners: Iterable[tuple[ProcAddress, int]], port: int, address: str | None) -> bool:
    """True when a host service listens where the DNAT of ``port`` would catch its
    clients: on every address, on the published address, or (without one, when every
    local address is published) on any address but loopback."""
    published = ipaddress.ip_address(address) if address else None
    for local, number in listeners:
        mapped = getattr(local, "ipv4_mapped", None) or local
        if number != port:
            continue
        if mapped.is_unspecified or mapped == published:
            return True
        if published is None and not mapped.is_loopback and mapped.version == 4:
            return True  # the DNAT is IPv4's: a listener on one IPv6 address is not caught
    return False


def _read_listeners(protocol: str) -> list[tuple[ProcAddress, int]]:
    """On a thread inside the host netns: /proc/thread-self/net is that netns' view."""
    found = []
    for suffix in ("", "6"):
        try:
            with open(f"/proc/thread-self/net/{protocol}{suffix}") as f:
                found += host_listeners(f.read(), protocol)
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
    return found


class PortPublisher:
    """Publishes and withdraws endpoints' ports in this agent's nft table."""

    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        self.table = settings.prefix
        self._forwarding = False

    async def _nft(self, *args: str, script: str | None = None) -> tuple[int, str, str]:
        argv = ["nft", *args] if script is None else ["nft", "-f", "-"]
        return await ns.run_command(argv, netns=self.settings.host_netns, stdin=script)

    async def _apply(self, script: str, what: str) -> None:
        rc, _, err = await self._nft(script=script)
        if rc != 0:
            raise NetworkError(f"{what}: nft: {err.strip()}")

    async def rules(self) -> list[Rule]:
        """Our rules now in the kernel (none if the table does not exist)."""
        rc, out, err = await self._nft("-j", "-a", "list", "table", "ip", self.table)
        if rc != 0:
            if "No such file or directory" in err:
                return []
            raise NetworkError(f"list nft table {self.table}: {err.strip()}")
        return parse_rules(out, self.table)

    async def publish(self, endpoint_id: str, ports: Sequence[PortMapping], target_ip: str) -> None:
        """DNAT ``ports`` of the endpoint to ``target_ip``; replaces its earlier rules.
        NetworkError if another endpoint publishes one of the ports already."""
        if not ports:
            return
        rules = await self.rules()
        taken = conflicts(rules, endpoint_id, ports)
        if taken:
            raise NetworkError(f"port already published on this node: {', '.join(taken)}")
        busy = await self._used_by_host(ports)
        if busy:
            raise NetworkError(f"port in use by a service of this node: {', '.join(busy)}")
        await self._ensure_forwarding()
        script = publish_script(
            self.table,
            endpoint_id,
            ports,
            target_ip=target_ip,
            address=self.settings.host_address,
            stale=[r for r in rules if r.endpoint_id == endpoint_id],
        )
        await self._apply(script, f"publish ports of {endpoint_id}")

    async def _used_by_host(self, ports: Iterable[PortMapping]) -> list[str]:
        """Ports a service of the host listens on where the DNAT would take its clients
        (sshd on 0.0.0.0:22, a database on the node's address): publishing them would
        silently cut that service off, so the task fails with this reason instead."""
        address = self.settings.host_address
        busy = []
        for protocol in sorted({p.protocol for p in ports}):
            listeners = await ns.run_in_netns(
                self.settings.host_netns, lambda proto=protocol: _read_listeners(proto)
            )
            busy += [
                f"{p.published}/{protocol}"
                for p in ports
                if p.protocol == protocol and in_use(listeners, p.published, address)
            ]
        return busy

    async def unpublish(self, endpoint_id: str) -> None:
        """Delete the endpoint's rules. Safe to call twice."""
        mine = [r for r in await self.rules() if r.endpoint_id == endpoint_id]
        if mine:
            await self._apply(delete_script(self.table, mine), f"unpublish {endpoint_id}")

    async def sweep(self, keep: Collection[str]) -> list[str]:
        """Delete the rules of endpoints not in ``keep``; returns those endpoint ids."""
        doomed = [r for r in await self.rules() if r.endpoint_id not in keep]
        if doomed:
            await self._apply(delete_script(self.table, doomed), "sweep published ports")
        return sorted({r.endpoint_id for r in doomed})

    async def remove_table(self) -> bool:
        """Delete the whole table; True if it existed. Without nft installed there can
        be no table of ours."""
        if shutil.which("nft") is None:
            return False
        rc, _, err = await self._nft("delete", "table", "ip", self.table)
        if rc != 0 and "No such file or directory" not in err:
            raise NetworkError(f"delete nft table {self.table}: {err.strip()}")
        return rc == 0

    async def _ensure_forwarding(self) -> None:
        if self._forwarding or not self.settings.ip_forward:
            return
        try:
            await ns.run_in_netns(self.settings.host_netns, _enable_forwarding)
        except OSError as exc:
            raise NetworkError(f"turn on ip_forward in the host netns: {exc}") from exc
        self._forwarding = True


def _enable_forwarding() -> None:
    """On a thread inside the host netns: /proc/sys/net answers for the caller's netns."""
    with open("/proc/sys/net/ipv4/ip_forward", "r+") as f:
        if f.read().strip() != "1":
            f.seek(0)
            f.write("1\n")
