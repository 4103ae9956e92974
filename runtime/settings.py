"""Tunables of the runtime layer, one dataclass per consumer, a docstring per field.

Everything that touches the host is rooted in a path given here, so several agents can share
one machine (each with its own state dir, runc root and cgroup parent) and tests can run
side by side with the real thing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from orch.errors import ValidationError


@dataclass(frozen=True)
class ImageSettings:
    """How images are pulled."""

    skopeo_binary: str = "skopeo"
    """The skopeo executable."""
    pull_timeout: float = 300.0
    """Upper bound for one `skopeo copy` (seconds, also skopeo's --command-timeout); the pull
    fails with ImageError after it. Missing images and refused connections fail at once."""
    insecure_registries: tuple[str, ...] = ()
    """Registries ("host:port") reached over plain HTTP / unverified TLS. Loopback always is."""
    mirrors: dict[str, str] = field(default_factory=dict)
    """Registry mirrors, Docker/containerd style: registry "host[:port]" -> the "host[:port]"
    that serves its images here ("127.0.0.1:5055" -> "10.212.7.1:5055" in a local
    cluster, where 127.0.0.1 inside a host netns is that host's own loopback). The pull
    goes to the mirror only (no fallback to the original); the image reference users see
    stays the original. A mirror of a loopback registry is reached over plain HTTP too."""

    oci_layout_dirs: tuple[str, ...] = ("/var/lib/orch/layouts",)
    """Directories whose OCI layouts may be run as ``oci:/path[:tag]`` images (symlinks
    are resolved first). Anything else is refused: an image reference comes from whoever
    may deploy, and must not make the agent read arbitrary host paths as root."""

    def __post_init__(self) -> None:
        for d in self.oci_layout_dirs:
            if not d.startswith("/"):
                raise ValidationError(f"OCI layout dir {d!r}: must be an absolute path")
        for origin, mirror in self.mirrors.items():
            for part in (origin, mirror):
                if not part or "/" in part or any(c.isspace() for c in part):
                    raise ValidationError(
                        f"registry mirror {origin}={mirror}: want host[:port]=host[:port]"
                    )


@dataclass(frozen=True)
class RuntimeSettings:
    """Where and how containers run."""

    state_dir: Path
    """Root of this agent's container state: containers/<id>/ (bundle, rootfs, shim files)
    and logs/<id>.log."""
    runc_root: Path
    """The OCI runtime's --root (its own state); private to this agent."""
    runtime_binary: str = "runc"
    """"runc" or "crun" (same CLI surface), or a path to one."""
    cgroup_parent: str = "orch"
    """Cgroup under which containers are placed: /<cgroup_parent>/<id> in every hierarchy."""
    stop_grace: float = 10.0
    """Default time between the stop signal and SIGKILL (seconds)."""
    kill_timeout: float = 10.0
    """How long to wait for a container to die after SIGKILL before giving up (seconds)."""
    start_timeout: float = 60.0
    """How long start() waits for the shim to report the container running or failed."""
    runtime_timeout: float = 30.0
    """Upper bound for one runc/crun CLI call such as state, kill or delete (seconds)."""
    nofile: int = 1048576
    """RLIMIT_NOFILE of containers, capped at the agent's own hard limit (raising it needs
    CAP_SYS_RESOURCE, which not every host grants)."""
    default_pids_limit: int = 4096
    """Pids limit (processes and threads) of a container whose task sets none. Docker
    sets none and Kubernetes' is node-wide; without one a fork bomb in any container
    fills the host's pid space and the agent can no longer fork runc or nft. 4096 is far
    above what services use (a JVM with a few hundred threads, a forking server with its
    workers) and a small share of the host's pid space (pid_max is at least 32768, and
    4194304 where systemd raises it), so a runaway container leaves the agent room. A
    task's own pids limit overrides it. Must be positive: there is no unlimited mode."""
    log_line_max: int = 16 * 1024
    """Lines longer than this are written to the log as several partial ("P") records."""
    log_follow_interval: float = 0.1
    """Poll interval of read_logs(follow=True) when it has reached the end of the file."""
    python: str = field(default=sys.executable)
    """Interpreter that runs the shim server (`python -S -I runtime/shim.py --serve FD`),
    which forks the per-container shims."""

    def __post_init__(self) -> None:
        if self.default_pids_limit <= 0:
            raise ValidationError(
                f"default pids limit {self.default_pids_limit}: must be a positive number"
            )

    @property
    def containers_dir(self) -> Path:
        return self.state_dir / "containers"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"
