"""Service discovery names: the records the dispatcher pushed, and which answer a name
gets for a given asker. Pure: no sockets, no clock.

The table holds, per network one of the node's tasks is on, every endpoint of that
network (``DnsRecords`` from the session, see manager/dispatcher/dnsrecords.py), replaced whole per
network as updates arrive. An asker is the list of networks it is on, in its interface
order (a container), or None for the node's own listener, which sees every network of
the node.

Names (case-insensitive, trailing dot optional):

    <service>                  the answerable tasks of the service
    tasks.<service>            the same (Swarm's name for the per-task records)
    <service>.<slot>           that slot's answerable task ("web.3")
    any of these + .<network>  only on that network ("web.front", "tasks.web.front")

An unqualified name is looked up on the asker's networks in order; the first network on
which the service (or slot) exists answers, with the addresses of its answerable tasks,
possibly none (NOERROR, empty: it exists but nothing is ready). NXDOMAIN when no reachable
network has it. Which names are ours, so never forwarded: every single-label name, every
``tasks.<x>`` name, every name ending in digits, and every name ending in a network of the
cluster (one the asker is not on answers NXDOMAIN; the dispatcher sends every node the
names of all networks). Everything else is forwarded upstream. So
``db`` on a network the asker is not on is NXDOMAIN, never leaked to the host's resolvers.

Answers rotate: each query for the same name on the same network starts one address
later (round robin over a stable, address-sorted order).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orch.proto import dispatcher_pb2

TASKS = "tasks"


@dataclass(frozen=True)
class Endpoint:
    service: str
    slot: int
    task_id: str
    address: str
    answerable: bool


class RecordTable:
    """The node's records, per network, as the dispatcher last sent them."""

    def __init__(self) -> None:
        self._networks: dict[str, dict[str, tuple[Endpoint, ...]]] = {}
        self._cluster_networks: frozenset[str] = frozenset()
        self.version = 0
        """Bumped on every change (for anything that caches answers)."""

    def apply(
        self,
        records: Iterable[dispatcher_pb2.DnsRecords],
        removed: Iterable[str] = (),
        *,
        full: bool = False,
    ) -> None:
        """Follow one update: ``records`` replace their networks, ``removed`` go, and with
        ``full`` every network not in ``records`` goes too."""
        incoming: dict[str, dict[str, tuple[Endpoint, ...]]] = {}
        for item in records:
            services: dict[str, list[Endpoint]] = {}
            for e in item.endpoints:
                endpoint = Endpoint(e.service.lower(), e.slot, e.task_id, e.address, e.answerable)
                services.setdefault(endpoint.service, []).append(endpoint)
            incoming[item.network.lower()] = {
                k: tuple(sorted(v, key=_by_address)) for k, v in services.items()
            }
        if full:
            self._networks = incoming
        else:
            for name in removed:
                self._networks.pop(name.lower(), None)
            self._networks.update(incoming)
        self.version += 1

    def set_cluster_networks(self, names: Iterable[str]) -> None:
        """The names of every user network of the cluster (this node on it or not)."""
        self._cluster_networks = frozenset(n.lower() for n in names)
        self.version += 1

    def networks(self) -> list[str]:
        """The networks with records, sorted."""
        return sorted(self._networks)

    def knows_network(self, name: str) -> bool:
        """A network of this node, or of the cluster: names under it are ours."""
        return name in self._networks or name in self._cluster_networks

    def service(self, network: str, name: str) -> tuple[Endpoint, ...] | None:
        """The endpoints of service ``name`` on ``network``; None if it has none there."""
        return self._networks.get(network, {}).get(name)


class Outcome(enum.Enum):
    ANSWER = "answer"
    """Ours: answer with ``addresses`` (possibly none)."""
    NXDOMAIN = "nxdomain"
    """Ours, but no network the asker reaches has it."""
    FORWARD = "forward"
    """Not a cluster name: ask the upstream resolvers."""


@dataclass(frozen=True)
class Resolution:
    outcome: Outcome
    addresses: tuple[str, ...] = ()
    key: str = ""
    """What rotation counts per: "<network>/<service>[/<slot>]"."""


FORWARD = Resolution(Outcome.FORWARD)
NXDOMAIN = Resolution(Outcome.NXDOMAIN)


def resolve(table: RecordTable, asker: Sequence[str] | None, name: str) -> Resolution:
    """What ``name`` (lower case, no trailing dot) means to an asker on the networks
    ``asker`` (None: every network of the node)."""
    if not name:
        return FORWARD
    labels = name.split(".")
    reachable = table.networks() if asker is None else list(asker)
    scope = reachable
    qualified = False
    last = labels[-1]
    if len(labels) >= 2 and not last.isdigit() and (last in reachable or table.knows_network(last)):
        if last not in reachable:
            return NXDOMAIN  # a network the asker is not on
        scope, labels, qualified = [last], labels[:-1], True
    form = _parse(labels)
    if form is None:
        # No top-level domain is numeric: a name ending in digits is ours too.
        return NXDOMAIN if qualified or labels[-1].isdigit() else FORWARD
    service, slot = form
    for network in scope:
        endpoints = table.service(network, service)
        if endpoints is None:
            continue
        if slot is not None:
            endpoints = tuple(e for e in endpoints if e.slot == slot)
            if not endpoints:
                continue
        addresses = tuple(dict.fromkeys(e.address for e in endpoints if e.answerable))
        key = f"{network}/{service}" + (f"/{slot}" if slot is not None else "")
        return Resolution(Outcome.ANSWER, addresses, key)
    return NXDOMAIN


def _by_address(endpoint: Endpoint) -> tuple[int, str]:
    try:
        return int(ipaddress.IPv4Address(endpoint.address)), endpoint.task_id
    except ValueError:
        return 0, endpoint.task_id


def _parse(labels: list[str]) -> tuple[str, int | None] | None:
    """(service, slot or None) for the name forms we answer; None for other names."""
    if len(labels) == 1:
        return labels[0], None
    if len(labels) == 2:
        first, second = labels
        if first == TASKS:
            return second, None
        if second.isdigit():
            return first, int(second)
    return None


class Rotator:
    """Round robin per name: each call for the same key starts one address later."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self._next: dict[str, int] = {}
        self._max_keys = max_keys

    def rotate(self, key: str, addresses: tuple[str, ...]) -> tuple[str, ...]:
        if len(addresses) < 2:
            return addresses
        if len(self._next) >= self._max_keys and key not in self._next:
            self._next.clear()  # bounded: keys come from names that exist, but be safe
        i = self._next.get(key, 0) % len(addresses)
        self._next[key] = i + 1
        return addresses[i:] + addresses[:i]
