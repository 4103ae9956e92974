"""The runtime layer's own value types: what the agent hands in and what it gets back.

The runtime knows nothing of tasks or protobuf; the agent translates a Task into a
``ContainerConfig`` and reads ``ExitStatus`` / ``ContainerRecord`` / ``LogLine`` back.
These are plain dataclasses so the pure parts (spec building, log parsing) can be tested
without any IO, and so ``ContainerConfig`` round-trips through JSON (it is stored in the
container's directory, which is what lets a restarted agent re-adopt its containers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Limits:
    """Resource limits; 0 means unlimited."""

    nano_cpus: int = 0
    """CPU quota in units of 1e-9 CPUs (Docker's --cpus * 1e9)."""
    memory_bytes: int = 0
    """Memory limit (swap is capped to the same value, so the container does not swap)."""
    pids: int = 0
    """Maximum number of processes in the container."""


@dataclass(frozen=True)
class BindMount:
    """A host path bind-mounted into the container (resolv.conf, hosts, volumes)."""

    source: str
    destination: str
    readonly: bool = True


@dataclass(frozen=True)
class ContainerConfig:
    """Everything needed to run one container, apart from the image itself."""

    id: str
    """Container id: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 chars; unique per runtime root."""
    image: str
    """The image reference it runs (informational; the layers come from ``Image``)."""
    command: list[str] | None = None
    """Replaces the image Entrypoint (and then drops the image Cmd, as Docker does)."""
    args: list[str] | None = None
    """Replaces the image Cmd."""
    env: list[str] = field(default_factory=list)
    """"KEY=VALUE" entries applied over the image's Env."""
    workdir: str | None = None
    hostname: str | None = None
    """Defaults to the first 12 characters of the id."""
    user: str | None = None
    """"uid[:gid]" or "name[:group]" (names are looked up in the image's /etc/passwd)."""
    labels: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    netns_path: str | None = None
    """Network namespace to join; None shares the agent's network namespace."""
    mounts: list[BindMount] = field(default_factory=list)
    stop_signal: str | None = None
    """Signal sent by stop(); None uses the image's StopSignal, else SIGTERM."""
    stop_grace_seconds: float | None = None
    """Time between the stop signal and SIGKILL; None uses the runtime's default."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerConfig:
        data = dict(data)
        data["limits"] = Limits(**data.get("limits", {}))
        data["mounts"] = [BindMount(**m) for m in data.get("mounts", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Image:
    """A pulled and unpacked image."""

    ref: str
    """The reference it was pulled by."""
    digest: str
    """Digest of the image manifest as stored locally ("sha256:...")."""
    layers: list[Path]
    """Unpacked layer directories, bottom to top."""
    config: dict[str, Any]
    """The "config" object of the OCI image config: Env, Entrypoint, Cmd, WorkingDir..."""


@dataclass(frozen=True)
class ExitStatus:
    """How a container's init process ended."""

    exit_code: int
    """The exit code, 128+N when killed by signal N."""
    signal: str | None
    """Name of the signal that killed it, if any ("SIGKILL")."""
    oom_killed: bool
    """The kernel's OOM killer killed a process of the container (best effort)."""
    finished_at: datetime
    error: str | None = None
    """Set when the real status could not be known (the shim died before recording it)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "oom_killed": self.oom_killed,
            "finished_at_ns": int(self.finished_at.timestamp() * 1e9),
            "finished_at": self.finished_at.isoformat(),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExitStatus:
        return cls(
            exit_code=int(data["exit_code"]),
            signal=data.get("signal"),
            oom_killed=bool(data.get("oom_killed", False)),
            finished_at=datetime.fromtimestamp(int(data["finished_at_ns"]) / 1e9, tz=UTC),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class ContainerRecord:
    """What the runtime knows of one container in its state dir (for adoption)."""

    id: str
    config: ContainerConfig
    image_digest: str
    created_at: datetime
    status: str
    """"created" (never started), "running", or "exited"."""
    pid: int | None
    """Host pid of the container's init while running."""
    exit: ExitStatus | None
    """Set once the container has ended."""
    stop_signal: str
    """The signal stop() sends by default (resolved from config, image, SIGTERM)."""


@dataclass(frozen=True)
class LogLine:
    """One line of a container's output, as read back from its CRI-format log file."""

    timestamp: str
    """RFC 3339 with nanoseconds, UTC, as written by the shim."""
    stream: str
    """"stdout" or "stderr"."""
    line: bytes
    """The line without its newline; long lines split by the shim are joined again."""
