"""client.py's short reasons for UNAVAILABLE, on the strings grpc 1.7x really produces."""

from __future__ import annotations

import pytest

from orch.cli.client import ManagerUnreachableError, unavailable_reason


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:7701: "
            "Failed to connect to remote host: Connection refused",
            "connection refused",
        ),
        (
            "errors resolving nosuchhost.invalid:7701: [field:hostname lookup error:address "
            "lookup failed for nosuchhost.invalid:7701: Domain name not found]",
            "unknown host",
        ),
        ("Socket closed", "connection closed"),
        ("etcd is unreachable: no leader", "etcd is unreachable: no leader"),
        ("", "unavailable"),
    ],
)
def test_unavailable_reason(details: str, reason: str) -> None:
    assert unavailable_reason(details) == reason


def test_unreachable_message_lists_every_address() -> None:
    exc = ManagerUnreachableError([("a:1", "connection refused"), ("b:2", "unknown host")])
    assert str(exc) == "cannot reach a manager at a:1 (connection refused), b:2 (unknown host)"
