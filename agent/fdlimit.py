"""The agent's own open-file limit.

Why: the agent holds a socket pair per container resolver, DNS sessions and forwards,
gRPC streams, log files and pipes to runc; the 1024 soft limit most systems start a
process with is a ceiling a busy node meets (and an attacker can push it into). Like
dockerd and containerd (LimitNOFILE in their units) the agent raises its soft limit at
start: to ``AGENT_NOFILE``, or the hard limit if that is lower (raising the hard limit
would need CAP_SYS_RESOURCE and is the service manager's business). Everything the DNS
resolver may hold is bounded well under it (``DnsSettings.fd_budget``). Containers do not
inherit it: their config.json sets their own RLIMIT_NOFILE (runtime/spec.py).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

AGENT_NOFILE = 65536
"""The soft RLIMIT_NOFILE the agent asks for (capped at the hard limit)."""


def raise_fd_limit(want: int = AGENT_NOFILE) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``want`` (at most the hard limit; never
    lowered); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
