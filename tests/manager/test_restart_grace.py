"""The restart grace a Leaving agent gets (dispatcher.restart_grace): the manager's default,
what the agent asks for within the manager's cap, never less than one liveness TTL."""

from __future__ import annotations

import pytest

from orch.manager.dispatcher.settings import DispatcherSettings, restart_grace


@pytest.mark.parametrize(
    ("manager", "requested", "granted"),
    [
        (30, 0, 30),  # the manager's default
        (30, 10, 10),  # less, as asked
        (30, 2.2, 3),  # whole seconds (etcd leases), rounded up
        (30, 999, 30),  # capped by the manager
        (30, 0.5, 2),  # never shorter than the liveness TTL
        (1, 0, 2),  # a manager grace below the TTL: one TTL
        (0, 10, 0),  # the manager gives no grace
    ],
)
def test_restart_grace(manager: int, requested: float, granted: int) -> None:
    settings = DispatcherSettings(liveness_ttl=2, restart_grace=manager)
    assert restart_grace(settings, requested) == granted
