"""Every size limit of what users send, in one place, and the one-line refusals.

The CLI (manifest loader, `orch scale`) and the manager (every write RPC) check the same
limits with these functions, before anything is read or written. Why bounds at all: each
value ends up in etcd and in every manager's view, is copied into every task, and is
sent to agents; an unbounded value is memory on every machine of the cluster, and an
etcd request larger than its limit (1.5 MiB by default) fails half-way through an apply.
Each refusal names the field and the limit, so the fix is obvious.
"""

from __future__ import annotations

from collections.abc import Iterable, Sized

from orch.manifests.problems import Problem

MAX_NAME = 63
"""Service and network names are DNS labels (RFC 1035): 63 characters."""
MAX_REPLICAS = 10_000
"""Per service. A typo guard with room: the orchestrator plans every slot of a service in
memory on each pass, and every leader does it again after a failover, so 2**64 replicas
would take down every manager in turn. Swarm sets no bound; Kubernetes bounds only the
request size. 10,000 tasks of one service is more than an orch cluster (a few dozen
nodes) is meant to run, and ~10 MB of task objects in etcd."""
MAX_LABELS = 64
"""Labels of one service, container, network or node."""
MAX_LABEL_KEY = 253
MAX_LABEL_VALUE = 1024
"""Label values are free text, but not unbounded: a node object goes to every view."""
MAX_ENV = 1024
"""Entries of spec.env."""
MAX_ENV_BYTES = 128 * 1024
"""All of spec.env: Linux's limit for one string of execve is 128 KiB."""
MAX_ARGS = 1024
"""Arguments of spec.command and of a health check's exec command."""
MAX_COMMAND_BYTES = 128 * 1024
"""All of spec.command, as MAX_ENV_BYTES."""
MAX_HEALTH_COMMAND_BYTES = 16 * 1024
"""A health check's exec command: it runs every interval, a script belongs in the image."""
MAX_PORTS = 256
"""Published ports of a service: each is three nft rules on its node."""
MAX_NETWORKS = 32
"""Networks of a service: each is an interface (eth0...) and an address in every task."""
MAX_ALIASES = 64
"""Aliases on one network: each is a DNS record on every node of the network."""
MAX_PLACEMENT_RULES = 64
"""Constraints, and spread preferences, of a service: evaluated per node per task."""
MAX_PATH = 4096
"""PATH_MAX: spec.workdir and a health check's URL path."""
MAX_SPEC_BYTES = 256 * 1024
"""One service or network spec, encoded. An update writes the spec twice (spec and
previous_spec, as JSON), so a spec at this bound still fits etcd's request with room."""
MAX_APPLY_BYTES = 512 * 1024
"""All the specs of one apply, encoded: they are written in ONE etcd transaction, each
update twice, and etcd refuses a request over 1.5 MiB (--max-request-bytes)."""


def too_many(items: Sized, limit: int, path: str, what: str) -> list[Problem]:
    """A problem when ``items`` has more than ``limit`` entries."""
    if len(items) <= limit:
        return []
    return [Problem(path, f"{len(items)} {what}, at most {limit} allowed")]


def too_long(text: str, limit: int, path: str) -> list[Problem]:
    """A problem when ``text`` has more than ``limit`` characters (the value is not shown:
    it is too long for a one-line message)."""
    if len(text) <= limit:
        return []
    return [Problem(path, f"{len(text)} characters, at most {limit} allowed")]


def too_big(texts: Iterable[str], limit: int, path: str) -> list[Problem]:
    """A problem when ``texts`` together take more than ``limit`` bytes (UTF-8)."""
    return too_large(sum(len(t.encode()) for t in texts), limit, path)


def too_large(size: int, limit: int, path: str) -> list[Problem]:
    """A problem when ``size`` bytes are more than ``limit``."""
    if size <= limit:
        return []
    return [Problem(path, f"{size} bytes, at most {limit} allowed")]


def replicas_problems(replicas: int, path: str) -> list[Problem]:
    """A problem when ``replicas`` is outside 0..MAX_REPLICAS (the wire type is uint64)."""
    if 0 <= replicas <= MAX_REPLICAS:
        return []
    return [Problem(path, f"expected at most {MAX_REPLICAS} replicas, got {replicas}")]
