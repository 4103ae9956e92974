"""The CLI's Control API client: one channel per manager address, failover between them,
and gRPC errors translated into orch's exception tree with one-line messages.

It uses grpc's synchronous API on purpose. A CLI invocation makes one to three calls and
exits; there is no other work an event loop could do meanwhile, the sync stubs need no
loop set-up or teardown, Ctrl-C interrupts a blocking call directly, and a server stream
is a plain iterator. (The project's asyncio rule is about daemons, where a blocking call
stalls everything else.)

Failover: addresses are tried in order, starting with the one that answered last. An
address counts as unreachable when no connection comes up within ``connect_timeout``, or
when a call fails with UNAVAILABLE (refused, reset, or a manager that says it cannot
serve); then the next address is tried. Any other error is the manager's answer and is
not retried elsewhere, since the call may have taken effect. So is an UNAVAILABLE that
the manager marks as coming from etcd (a StoreError, see grpcerrors.py): all managers
share that etcd, and asking each in turn would only multiply the wait (the manager's
Store timeout, 10 s) by the number of managers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from orch import grpcerrors
from orch.cli.config import CliSettings
from orch.errors import OrchError
from orch.identity import channels
from orch.identity.channels import ClientTLS
from orch.proto import control_pb2_grpc

T = TypeVar("T")

_DEFAULT = object()  # "use settings.timeout"; None means no deadline


class ManagerUnreachableError(OrchError):
    """No manager address answered. ``failures`` holds (address, reason) per address."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = list(failures)
        where = ", ".join(f"{address} ({reason})" for address, reason in self.failures)
        super().__init__(f"cannot reach a manager at {where}")


class _Unreachable(Exception):
    """This address did not answer; try the next one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Substrings of grpc's UNAVAILABLE details -> the short reason a person reads.
_REASONS = (
    # TLS first: grpc words a refused handshake as a failed connection too.
    (
        "certificate_verify_failed",
        "TLS: its certificate is not signed by the CA in the TLS dir: another cluster's "
        "manager, or another cluster's credentials",
    ),
    (
        "handshake",
        "TLS handshake failed: the manager refused these credentials (another cluster's, "
        "or expired?)",
    ),
    ("connection refused", "connection refused"),
    ("domain name not found", "unknown host"),
    ("name or service not known", "unknown host"),
    ("dns resolution failed", "unknown host"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("connection reset", "connection reset"),
    ("socket closed", "connection closed"),
    ("timed out", "timed out"),
    ("deadline exceeded", "timed out"),
)


def unavailable_reason(details: str) -> str:
    """A short reason for an UNAVAILABLE status: grpc's connection errors are long and
    nested ("failed to connect to all addresses; last error: ... Connection refused"); a
    manager's own UNAVAILABLE message (e.g. no leader) is kept as it is."""
    lowered = details.lower()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason
    return details.strip() or "unavailable"


def manager_unavailable(exc: grpc.RpcError) -> bool:
    """The manager itself did not answer (UNAVAILABLE, and not a StoreError: see
    grpcerrors.py); another manager may."""
    unavailable = grpcerrors.code_of(exc) == grpc.StatusCode.UNAVAILABLE
    return unavailable and grpcerrors.error_of(exc) is None


def translate_error(
    exc: grpc.RpcError, *, address: str, method: str, timeout: float | None
) -> OrchError:
    """The OrchError for a failed call: the manager's own error as it sent it, or one line
    about the call for a status of the connection."""
    known = grpcerrors.error_of(exc)
    if known is not None:
        return known
    code = grpcerrors.code_of(exc)
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        within = f" within {timeout:g}s" if timeout is not None else ""
        return OrchError(f"the manager at {address} did not answer {method}{within}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return OrchError(f"the manager at {address} does not implement {method} ({details})")
    if code == grpc.StatusCode.CANCELLED:
        return OrchError(f"{method} was cancelled")
    return OrchError(details or f"{method} failed: {code.name.lower()}")


class ControlClient:
    """Calls the Control API on the first manager that answers."""

    def __init__(
        self, addresses: list[str], settings: CliSettings | None = None, *, tls: ClientTLS
    ) -> None:
        """``tls``: the admin (or manager) credentials every channel presents."""
        if not addresses:
            raise ValueError("ControlClient needs at least one address")
        self._tls = tls
        self._addresses = list(addresses)
        self._settings = settings or CliSettings()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, control_pb2_grpc.ControlStub] = {}
        self._probed: set[str] = set()  # channels whose first connection we waited for

    @property
    def addresses(self) -> list[str]:
        """Addresses in the order the next call tries them (the last good one first)."""
        return list(self._addresses)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()
        self._probed.clear()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        request: Message,
        *,
        timeout: Any = _DEFAULT,
        service: Callable[[grpc.Channel], Any] | None = None,
    ) -> Any:
        """A unary call, e.g. ``call("GetService", GetServiceRequest(name="web"))``;
        ``service``: another service of the manager's mTLS port than Control (its stub
        class, e.g. ``ca_pb2_grpc.ClusterCAStub``)."""
        deadline = self._settings.timeout if timeout is _DEFAULT else timeout

        def invoke(stub: Any) -> Any:
            return getattr(stub, method)(request, timeout=deadline)

        return self._failover(method, deadline, invoke, service)

    def stream(self, method: str, request: Message, *, timeout: Any = _DEFAULT) -> Iterator[Any]:
        """A server-streaming call as an iterator. Failover happens only until the first
        message arrives; an error later ends the iteration with an OrchError. Closing the
        iterator cancels the call."""
        deadline = self._settings.timeout if timeout is _DEFAULT else timeout
        calls: list[Any] = []

        def open_stream(stub: control_pb2_grpc.ControlStub) -> list[Any]:
            call = getattr(stub, method)(request, timeout=deadline)
            calls.append(call)
            first = next(call, None)  # errors before the first message may fail over
            return [] if first is None else [first]

        head = self._failover(method, deadline, open_stream)
        address, call = self._addresses[0], calls[-1]  # _failover put the good one first
        try:
            yield from head
            yield from call
        except grpc.RpcError as exc:
            if manager_unavailable(exc):
                reason = unavailable_reason(exc.details() or "")
                raise OrchError(f"lost the manager at {address} ({reason})") from exc
            raise translate_error(exc, address=address, method=method, timeout=deadline) from exc
        finally:
            call.cancel()

    def _failover(
        self,
        method: str,
        timeout: float | None,
        invoke: Callable[[control_pb2_grpc.ControlStub], T],
        service: Callable[[grpc.Channel], Any] | None = None,
    ) -> T:
        failures: list[tuple[str, str]] = []
        for address in list(self._addresses):
            try:
                result = self._attempt(address, method, timeout, invoke, service)
            except _Unreachable as exc:
                failures.append((address, exc.reason))
                continue
            # Stick to the manager that answered.
            self._addresses.remove(address)
            self._addresses.insert(0, address)
            return result
        raise ManagerUnreachableError(failures)

    def _attempt(
        self,
        address: str,
        method: str,
        timeout: float | None,
        invoke: Callable[[control_pb2_grpc.ControlStub], T],
        service: Callable[[grpc.Channel], Any] | None = None,
    ) -> T:
        channel, stub = self._channel(address)
        if service is not None:
            stub = service(channel)
        # Only a channel's first use waits for its connection: grpc's connectivity poller
        # thread, once re-armed by a second subscribe, can outlive unsubscribe and then
        # fails loudly ("Channel closed!") when close() runs. Later calls on the channel
        # fail fast anyway.
        if address not in self._probed:
            self._probed.add(address)
            if not _wait_connectable(channel, self._settings.connect_timeout):
                raise _Unreachable(f"no connection within {self._settings.connect_timeout:g}s")
        try:
            return invoke(stub)
        except grpc.RpcError as exc:
            if manager_unavailable(exc):
                raise _Unreachable(unavailable_reason(exc.details() or "")) from exc
            raise translate_error(exc, address=address, method=method, timeout=timeout) from exc

    def _channel(self, address: str) -> tuple[grpc.Channel, control_pb2_grpc.ControlStub]:
        if address not in self._channels:
            self._channels[address] = channels.channel(address, self._tls)
            self._stubs[address] = control_pb2_grpc.ControlStub(self._channels[address])
        return self._channels[address], self._stubs[address]


def _wait_connectable(channel: grpc.Channel, timeout: float) -> bool:
    """Wait until the channel is READY or has failed (TRANSIENT_FAILURE), so that the next
    call either works or fails at once with grpc's reason. False when it is still trying
    after ``timeout`` (an address that drops packets, or a peer that never speaks HTTP/2)."""
    settled = threading.Event()
    done = {
        grpc.ChannelConnectivity.READY,
        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        grpc.ChannelConnectivity.SHUTDOWN,
    }

    def on_change(state: grpc.ChannelConnectivity) -> None:
        if state in done:
            settled.set()

    channel.subscribe(on_change, try_to_connect=True)
    try:
        return settled.wait(timeout)
    finally:
        channel.unsubscribe(on_change)
