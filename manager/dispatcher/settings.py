"""The dispatcher's settings, and the restart grace a Leaving agent gets from them."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DispatcherSettings:
    heartbeat_period: float = 0.5
    """Seconds between agent heartbeats (sent to the agent in SessionStarted)."""
    liveness_ttl: int = 2
    """Seconds a node's liveness lease lives after the agent's last message: the bulk of
    the time to detect a dead node. Whole seconds (etcd leases), at least 2 (etcd's
    minimum TTL is 1.5 s with its default timings, rounded up); four heartbeats fit in."""
    restart_grace: int = 30
    """Seconds a node keeps its liveness after its agent said it is restarting (Leaving):
    how long a graceful agent restart may take before the node counts as lost. Also the
    most an agent may ask for. 0: no grace (a graceful stop counts like a crash)."""
    status_flush: float = 0.1
    """Seconds status updates are gathered before one write to etcd (swarmkit: 100 ms)."""
    write_retries: int = 5
    """Attempts at a guarded node or status write that keeps losing races."""


RESTART_GRACE_MAX = 600
"""Upper bound of ``restart_grace`` (seconds): a node stopped for good stays hidden that long."""


def restart_grace(settings: DispatcherSettings, requested: float) -> int:
    """The grace (whole seconds) a Leaving agent gets: what it asked for (0: the manager's
    ``restart_grace``), at most ``restart_grace``, at least one liveness TTL; 0 when the
    manager gives none."""
    if settings.restart_grace <= 0:
        return 0
    wanted = min(settings.restart_grace, math.ceil(requested)) if requested > 0 else 0
    return max(settings.liveness_ttl, wanted or settings.restart_grace)
