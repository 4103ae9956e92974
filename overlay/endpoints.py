"""Per-container network endpoints: a netns, plugged into the container's networks.

``EndpointManager`` is what the agent calls around a container's life: ``setup`` before
the runtime creates the container (the runc config names ``EndpointInfo.netns_path`` as
its network namespace), ``teardown`` after it is gone, ``adopt`` after an agent restart,
``sweep`` at start to remove what a crashed run left behind, ``remove_all`` when a local
cluster shuts down. The three Docker modes map to:

- ``host``: no netns of its own (``netns_path`` None): the container shares the agent's
  netns; the attachment only reports ``NetworkSettings.host_address``.
- ``none``: a fresh netns with only lo, up.
- any driver network (``bridge``, VXLAN overlays): a fresh netns, lo up, and one
  interface per network (eth0, eth1, ... in the order given) plugged by that network's
  ``NetworkDriver``.

Published ports (``ports.py``) belong to the endpoint too: DNAT rules to its first
address, made after the interfaces and removed by its teardown.

The manager owns the lifetime of per-network host objects that exist only while in use
(an overlay's bridge and VXLAN device, ``IdleRemovable`` drivers): it knows every
endpoint of every network from its records, so after each teardown it asks the drivers
of the endpoint's networks to remove their devices unless another record still names the
network. ``retire_driver`` (the network left this node) drops a driver at once if idle,
else with its last endpoint. ``sweep`` removes overlay devices nobody uses and published
ports of endpoints without a record; ``remove_all`` removes the whole nft table too.

Crash safety: the endpoint's record (``<state_dir>/network/endpoints/<id>.json``) is
written *before* any kernel object is made, naming the netns and host veths it will use,
and marked ready after. So every object carrying the agent's prefix is claimed by a
record, or is a leftover that ``sweep`` may delete; a record still "setup" after a crash
is torn down by ``sweep`` or ``adopt``. Sweep lists kernel objects first and reads records
second, so a setup racing it is never mistaken for a leftover.

Records are replaced atomically but not fsync'ed: a process crash loses nothing (the page
cache survives it), and the only thing that can leave a record torn or stale, a machine
crash, also takes every netns and veth it names with it. So a torn record is read as an
unfinished one (torn down under its default names), and a ready record whose netns is
gone is set up afresh. The manager keeps the veth names records claim in memory (it is
the only writer of its state dir), so a setup does not read every record.

Operations on one endpoint are serialised by a per-endpoint lock; different endpoints
proceed concurrently. ``setup`` is idempotent for the same networks; ``teardown`` is safe
to call twice and for endpoints never set up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from orch import model
from orch.errors import NetworkError, OrchError, ValidationError
from orch.overlay import names
from orch.overlay.bridge import BridgeDriver
from orch.overlay.driver import Attachment, IdleRemovable, NetworkDriver
from orch.overlay.ipam import write_json_atomic
from orch.overlay.links import HostNet, KernelNet
from orch.overlay.ports import PortMapping, PortPublisher
from orch.overlay.records import (
    READY,
    SETUP,
    EndpointInfo,
    EndpointRecord,
    SweepPlan,
    plan_sweep,
)
from orch.overlay.settings import NetworkSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "READY",
    "SETUP",
    "EndpointInfo",
    "EndpointManager",
    "EndpointRecord",
    "SweepPlan",
    "check_networks",
    "plan_sweep",
]


def check_networks(networks: Sequence[str], known: Collection[str]) -> tuple[str, ...]:
    """Validate a container's network list; return it as a tuple."""
    nets = tuple(networks)
    if not nets:
        raise ValidationError("an endpoint needs at least one network (or 'none')")
    if len(set(nets)) != len(nets):
        raise ValidationError(f"networks {list(nets)} name one network twice")
    for special in (model.HOST, model.NONE):
        if special in nets and len(nets) > 1:
            raise ValidationError(f"network mode {special!r} cannot be combined with {list(nets)}")
    unknown = [n for n in nets if n not in (model.HOST, model.NONE) and n not in known]
    if unknown:
        raise NetworkError(f"no network named {', '.join(unknown)} on this agent")
    return nets


class EndpointManager:
    """Sets up and tears down container network endpoints for one agent."""

    def __init__(
        self,
        settings: NetworkSettings,
        *,
        net: HostNet | None = None,
        drivers: Iterable[NetworkDriver] = (),
        ports: PortPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.net: HostNet = net or KernelNet(settings.host_netns)
        self.drivers: dict[str, NetworkDriver] = {}
        self._retired: set[str] = set()
        """Networks that left this node but still have endpoints (see retire_driver)."""
        self.register_driver(BridgeDriver(settings, self.net))
        for driver in drivers:
            self.register_driver(driver)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._busy: set[str] = set()
        self._claims: dict[str, dict[str, str]] | None = None
        """Endpoint id -> {network: host veth} its record claims; read from disk once."""
        self.ports = ports or PortPublisher(settings)
        self._published = False
        """Ports were published by this process (so a sweep looks at nft)."""

    # -- names and records ------------------------------------------------------------

    def register_driver(self, driver: NetworkDriver) -> None:
        """Serve ``driver.network`` with ``driver`` (replaces a driver of that name)."""
        if driver.network in (model.HOST, model.NONE):
            raise ValidationError(f"network name {driver.network!r} is reserved")
        self.drivers[driver.network] = driver
        self._retired.discard(driver.network)

    async def retire_driver(self, network: str) -> bool:
        """The network left this node: remove its devices and drop its driver now if no
        endpoint uses it (True), else when its last endpoint is torn down (False)."""
        driver = self.drivers.get(network)
        if driver is None or network == model.BRIDGE:
            return driver is None
        if isinstance(driver, IdleRemovable):
            if not await driver.remove_if_unused(lambda: self.in_use(network)):
                self._retired.add(network)
                return False
        elif self.in_use(network):
            self._retired.add(network)
            return False
        self.drivers.pop(network, None)
        return True

    def in_use(self, network: str) -> bool:
        """True if an endpoint record (finished or being set up) names ``network``."""
        return any(network in nets for nets in self._claimed().values())

    async def _release_idle(self, networks: Iterable[str]) -> None:
        """After a teardown: devices of networks no endpoint uses any more go."""
        for net in networks:
            driver = self.drivers.get(net)
            if not isinstance(driver, IdleRemovable):
                continue
            try:
                removed = await driver.remove_if_unused(lambda net=net: self.in_use(net))
            except NetworkError as exc:
                log.warning("removing the devices of idle network %s failed: %s", net, exc)
                continue
            if removed and net in self._retired:
                self._retired.discard(net)
                self.drivers.pop(net, None)

    def netns_name(self, endpoint_id: str) -> str:
        return names.netns_name(self.settings.prefix, endpoint_id)

    @property
    def records_dir(self) -> Path:
        return self.settings.network_dir / "endpoints"

    def _record_path(self, endpoint_id: str) -> Path:
        return self.records_dir / f"{endpoint_id}.json"

    def _load(self, endpoint_id: str) -> EndpointRecord | None:
        path = self._record_path(endpoint_id)
        try:
            return EndpointRecord.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise NetworkError(f"endpoint record {path} is corrupt: {exc}") from exc

    def _unknown(self, endpoint_id: str) -> EndpointRecord:
        """An unfinished record under the default names of every network: what a
        teardown undoes for an endpoint whose record is missing or unreadable."""
        return EndpointRecord(
            endpoint_id,
            list(self.drivers),
            self.netns_name(endpoint_id),
            {n: names.veth_name(self.settings.prefix, endpoint_id, n) for n in self.drivers},
        )

    def _load_or_unknown(self, endpoint_id: str) -> EndpointRecord | None:
        """The record; a corrupt one is logged and stands in as ``_unknown``."""
        try:
            return self._load(endpoint_id)
        except NetworkError as exc:
            log.warning("%s; treating it as unfinished", exc)
            return self._unknown(endpoint_id)

    def _save(self, rec: EndpointRecord) -> None:
        try:
            write_json_atomic(self._record_path(rec.endpoint_id), rec.to_json())
        except OSError as exc:
            raise NetworkError(f"cannot write endpoint record of {rec.endpoint_id}: {exc}") from exc
        self._claimed()[rec.endpoint_id] = dict(rec.host_ifnames)

    def _drop(self, endpoint_id: str) -> None:
        self._record_path(endpoint_id).unlink(missing_ok=True)
        self._claimed().pop(endpoint_id, None)

    def _claimed(self) -> dict[str, dict[str, str]]:
        if self._claims is None:
            self._claims = {eid: dict(rec.host_ifnames) for eid, rec in self.records().items()}
        return self._claims

    def records(self) -> dict[str, EndpointRecord]:
        """Every endpoint record on disk. A corrupt one is logged and stands in as an
        unfinished record under default names, so sweep tears down what its id names."""
        out: dict[str, EndpointRecord] = {}
        for path in sorted(self.records_dir.glob("*.json")):
            rec = self._load_or_unknown(path.stem)
            if rec is not None:
                out[path.stem] = rec
        return out

    def info(self, endpoint_id: str) -> EndpointInfo | None:
        """The recorded endpoint, if it is set up."""
        rec = self._load_or_unknown(endpoint_id)
        return rec.info() if rec and rec.state == READY else None

    def _lock(self, endpoint_id: str) -> asyncio.Lock:
        lock = self._locks.get(endpoint_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[endpoint_id] = lock
        return lock

    # -- setup ------------------------------------------------------------------------

    async def setup(
        self,
        endpoint_id: str,
        networks: Sequence[str],
        *,
        addresses: Mapping[str, str] | None = None,
        macs: Mapping[str, str] | None = None,
        ports: Sequence[PortMapping] = (),
    ) -> EndpointInfo:
        """Create the endpoint's netns and plug it into ``networks`` (in order: eth0,
        eth1, ...). ``addresses`` gives cluster-allocated addresses per network ("ip/len"),
        ``macs`` their MACs; other networks' addresses are allocated by the driver.
        ``ports`` are published to the first network's address. Idempotent; on failure
        nothing is left behind."""
        names.check_endpoint_id(endpoint_id)
        nets = check_networks(networks, self.drivers)
        if ports and nets == (model.NONE,):
            raise ValidationError("ports cannot be published by a task on network 'none'")
        lock = self._lock(endpoint_id)
        async with lock:
            self._busy.add(endpoint_id)
            try:
                old = self._load_or_unknown(endpoint_id)
                if old is not None and self._usable(old, nets, ports):
                    return old.info()
                if old is not None:
                    await self._teardown_locked(endpoint_id, old)
                rec = self._plan(endpoint_id, nets)
                rec.ports = list(ports)
                self._save(rec)
                try:
                    await self._build(rec, addresses or {}, macs or {})
                except BaseException:
                    await self._undo(rec)
                    raise
                rec.state = READY
                self._save(rec)
                return rec.info()
            finally:
                self._busy.discard(endpoint_id)

    def _usable(
        self, rec: EndpointRecord, nets: tuple[str, ...], ports: Sequence[PortMapping]
    ) -> bool:
        """True if ``rec`` is a finished setup of ``nets`` and ``ports`` whose netns still
        exists (a machine crash leaves records of endpoints that are long gone)."""
        return (
            rec.state == READY
            and tuple(rec.networks) == nets
            and rec.ports == list(ports)
            and (rec.netns is None or self.net.netns_exists(rec.netns))
        )

    def _plan(self, endpoint_id: str, nets: tuple[str, ...]) -> EndpointRecord:
        if nets == (model.HOST,):
            return EndpointRecord(endpoint_id, list(nets), None)
        taken = {
            n
            for eid, claim in self._claimed().items()
            if eid != endpoint_id
            for n in claim.values()
        }
        ifnames: dict[str, str] = {}
        for net in nets:
            if net == model.NONE:
                continue
            salt = 0
            while (name := names.veth_name(self.settings.prefix, endpoint_id, net, salt)) in taken:
                salt += 1
            taken.add(name)
            ifnames[net] = name
        return EndpointRecord(endpoint_id, list(nets), self.netns_name(endpoint_id), ifnames)

    async def _build(
        self, rec: EndpointRecord, addresses: Mapping[str, str], macs: Mapping[str, str]
    ) -> None:
        if rec.netns is None:
            if self.settings.host_address:
                rec.attachments.append(
                    Attachment(model.HOST, self.settings.host_address, "", "", "")
                )
            if rec.ports:
                # The container shares the host's netns and binds the ports itself (as
                # Docker ignores port mappings in host mode).
                log.info("endpoint %s: host network mode, ports are not mapped", rec.endpoint_id)
            return
        await self.net.create_netns(rec.netns)  # with lo up
        for index, net in enumerate(n for n in rec.networks if n != model.NONE):
            attachment = await self.drivers[net].attach(
                rec.endpoint_id,
                rec.netns,
                ifname=f"eth{index}",
                host_ifname=rec.host_ifnames[net],
                address=addresses.get(net),
                mac=macs.get(net),
            )
            rec.attachments.append(attachment)
        if rec.ports and rec.attachments:
            self._published = True
            await self.ports.publish(rec.endpoint_id, rec.ports, rec.attachments[0].ip)

    async def _undo(self, rec: EndpointRecord) -> None:
        """Roll back a failed setup; a failure here is logged, the original error wins."""
        try:
            await self._teardown_locked(rec.endpoint_id, rec)
        except (OrchError, OSError) as exc:
            log.warning("rolling back endpoint %s failed: %s", rec.endpoint_id, exc)

    # -- teardown ---------------------------------------------------------------------

    async def teardown(self, endpoint_id: str) -> None:
        """Unplug every network, free the addresses, delete the netns and the record.
        Safe to call twice and for an endpoint never set up."""
        names.check_endpoint_id(endpoint_id)
        async with self._lock(endpoint_id):
            self._busy.add(endpoint_id)
            try:
                await self._teardown_locked(endpoint_id, self._load_or_unknown(endpoint_id))
            finally:
                self._busy.discard(endpoint_id)

    async def _teardown_locked(self, endpoint_id: str, rec: EndpointRecord | None) -> None:
        recorded = rec is not None
        if rec is None:
            rec = self._unknown(endpoint_id)  # undo whatever default names would be used
        errors: list[str] = []
        if rec.ports and rec.netns:
            try:
                await self.ports.unpublish(endpoint_id)
            except NetworkError as exc:
                errors.append(str(exc))
        for net, host_ifname in rec.host_ifnames.items():
            driver = self.drivers.get(net)
            if driver is None:
                # No driver registered for the network (a cleanup without the agent's
                # session, or a network gone): the veth goes with its host end; the
                # network's own devices are swept by this agent's prefix.
                await self._attempt(errors, self.net.delete_link(host_ifname))
                continue
            try:
                await driver.detach(endpoint_id, host_ifname)
            except NetworkError as exc:
                errors.append(str(exc))
        if rec.netns:
            try:
                await self.net.delete_netns(rec.netns)
            except NetworkError as exc:
                errors.append(str(exc))
        if errors:
            raise NetworkError(f"teardown of endpoint {endpoint_id}: " + "; ".join(errors))
        self._drop(endpoint_id)
        if recorded:  # an endpoint without a record was released when its record went
            await self._release_idle(rec.host_ifnames)

    # -- restart ----------------------------------------------------------------------

    async def adopt(self, endpoint_id: str) -> EndpointInfo | None:
        """After an agent restart: the recorded endpoint if its netns and interfaces are
        all still there (addresses re-held). Otherwise its remains are torn down and
        None is returned, so the caller sets it up afresh."""
        names.check_endpoint_id(endpoint_id)
        async with self._lock(endpoint_id):
            self._busy.add(endpoint_id)
            try:
                rec = self._load_or_unknown(endpoint_id)
                if rec is None:
                    return None
                if await self._intact(rec):
                    return rec.info()
                log.info("endpoint %s is broken; tearing it down", endpoint_id)
                await self._teardown_locked(endpoint_id, rec)
                return None
            finally:
                self._busy.discard(endpoint_id)

    async def _intact(self, rec: EndpointRecord) -> bool:
        if rec.state != READY:
            return False
        if rec.netns and not self.net.netns_exists(rec.netns):
            return False
        for attachment in rec.attachments:
            if attachment.network == model.HOST:
                continue
            driver = self.drivers.get(attachment.network)
            if driver is None:
                raise NetworkError(
                    f"cannot adopt endpoint {rec.endpoint_id}: network {attachment.network} "
                    "has no driver yet (register it before adopting)"
                )
            if not await driver.adopt(rec.endpoint_id, attachment):
                return False
        return True

    # -- sweep ------------------------------------------------------------------------

    async def sweep(self, live: Collection[str] | None = None) -> SweepPlan:
        """Remove leftovers of crashed runs that carry this agent's prefix: netns and
        host veths no record claims, addresses held by no record, unfinished records.
        With ``live`` (endpoint ids whose containers exist), records of other endpoints
        are torn down too. Returns what was removed; failures are listed, not raised."""
        prefix = self.settings.prefix
        # Kernel objects first, records second: see the module docstring.
        netns_names = self.net.list_netns(names.owned_prefix(prefix))
        links = await self.net.list_links()
        owners = {net: set(d.owners()) for net, d in self.drivers.items()}
        records = self.records()
        ports = self._published or any(rec.ports for rec in records.values())
        plan = plan_sweep(
            prefix,
            netns_names=netns_names,
            links=links,
            owners=owners,
            records=records,
            busy=set(self._busy),
            live=live,
            devices=self._driver_devices(),
        )
        errors: list[str] = []
        await self._each(plan.endpoints, lambda eid: self._sweep_endpoint(eid, live, errors))
        await self._each(plan.netns, lambda n: self._attempt(errors, self.net.delete_netns(n)))
        await self._each(plan.links, lambda n: self._attempt(errors, self.net.delete_link(n)))
        for net, eid in plan.owners:
            await self._attempt(errors, self.drivers[net].release(eid))
        await self._attempt(errors, self._release_idle(list(self.drivers)))
        if ports:  # rules outlive a record only if its teardown failed: then it has ports
            await self._attempt(errors, self._sweep_ports())
        if any((plan.endpoints, plan.netns, plan.links, plan.owners)):
            log.info("sweep removed %s", plan)
        return SweepPlan(plan.endpoints, plan.netns, plan.links, plan.owners, tuple(errors))

    def _driver_devices(self) -> set[str]:
        """Overlay device names of registered drivers (they remove their own when idle)."""
        return {
            name
            for d in self.drivers.values()
            for name in (getattr(d, "bridge", None), getattr(d, "vxlan", None))
            if isinstance(d, IdleRemovable) and name
        }

    async def _sweep_ports(self) -> None:
        """Published ports of endpoints that have no record (and no setup running)."""
        keep = set(self._claimed()) | set(self._busy)
        swept = await self.ports.sweep(keep)
        if swept:
            log.info("sweep withdrew the published ports of %s", ", ".join(swept))

    async def _sweep_endpoint(
        self, endpoint_id: str, live: Collection[str] | None, errors: list[str]
    ) -> None:
        async with self._lock(endpoint_id):
            rec = self._load_or_unknown(endpoint_id)
            if rec is None:
                return
            if rec.state == READY and (live is None or endpoint_id in live):
                return  # it was set up again since the plan was made
            await self._attempt(errors, self._teardown_locked(endpoint_id, rec))

    async def _each(self, items: Iterable[T], work: Callable[[T], Awaitable[None]]) -> None:
        """``work(item)`` for every item, ``sweep_concurrency`` at a time. Deleting a veth
        mostly waits for the kernel (RCU grace periods, ~25 ms): one by one, a sweep of
        many endpoints would take seconds; side by side the waits overlap."""
        limit = asyncio.Semaphore(self.settings.sweep_concurrency)

        async def one(item: T) -> None:
            async with limit:
                await work(item)

        try:
            async with asyncio.TaskGroup() as group:
                for item in items:
                    group.create_task(one(item))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None  # what a one-by-one sweep would raise

    @staticmethod
    async def _attempt(errors: list[str], work: Awaitable[object]) -> None:
        try:
            await work
        except NetworkError as exc:
            errors.append(str(exc))

    async def remove_all(self) -> SweepPlan:
        """Tear down every endpoint and this agent's networks (local cluster shutdown)."""
        report = await self.sweep(live=())
        errors = list(report.errors)
        for driver in self.drivers.values():
            await self._attempt(errors, driver.remove())
        await self._attempt(errors, self.ports.remove_table())
        if errors:
            raise NetworkError("removing all endpoints: " + "; ".join(errors))
        return report
