"""Build the OCI runtime spec (a bundle's config.json) for a container: a pure function.

``build_spec`` takes the image's config, our ``ContainerConfig``, the rootfs and cgroup
paths and the image's /etc/passwd and /etc/group text, and returns the config.json dict.
It does no IO (but for reading the seccomp profile's data file once per process), so every
Docker-compatibility rule here (entrypoint/cmd merging, env override, user lookup, default
capabilities, mounts, masked paths, seccomp) is unit-tested directly.

The defaults follow Docker's (moby oci/defaults.go, caps/defaults.go) so images behave as
they do under `docker run`: /dev, /dev/pts, /dev/shm, /dev/mqueue, read-only /sys and
cgroup mounts, masked and read-only /proc entries, PATH and HOSTNAME/HOME in the env, and
Docker's default seccomp profile (seccomp.py). Stricter than Docker, and not switchable
(docs/architecture.md, "Container defaults"): no CAP_MKNOD, noNewPrivileges, no io_uring,
a pids limit when the task sets none, and oomScoreAdj 0 so containers never inherit the
agent's OOM protection. Not done: AppArmor/SELinux labels and user namespaces.
"""

from __future__ import annotations

import logging
import signal as signals
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orch.errors import ValidationError
from orch.runtime.images import host_arch
from orch.runtime.model import ContainerConfig
from orch.runtime.seccomp import default_profile

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_NOFILE = 1048576

# Docker's default capability set (moby oci/caps/defaults.go) minus CAP_MKNOD: runc
# always appends "c *:* m" and "b *:* m" device cgroup rules (see _hooks), so with
# CAP_MKNOD a container could make any device node in its upper dir, and a 0666 block
# device there is the host's disk for whoever reaches the dir on the host. Without the
# capability (and with user namespaces refused by seccomp) those rules grant nothing.
# Images that mknod at run time are rare; /dev already holds the standard devices.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

# Docker's lists (moby oci/defaults.go), /proc/interrupts included (it exposes the host's
# per-CPU interrupt counts, a side channel).
MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]

READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]

CPU_PERIOD_US = 100_000

DEFAULT_PIDS_LIMIT = 4096
"""Pids limit of a container whose task sets none (RuntimeSettings.default_pids_limit)."""

# Containers run at 0 whatever the agent that forks runc has (the agent protects itself
# with a low oom_score_adj, main.protect_from_oom; children inherit it unless told).
CONTAINER_OOM_SCORE_ADJ = 0


def _mount(dest: str, typ: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": dest, "type": typ, "source": source, "options": options}


STANDARD_MOUNTS = [
    _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
    _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
    _mount(
        "/dev/pts",
        "devpts",
        "devpts",
        ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    ),
    _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
    _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
    _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
    _mount("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "ro"]),
]


@dataclass(frozen=True)
class ExecUser:
    """The user the container's process runs as, resolved against the image's files."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str


def resolve_argv(config: ContainerConfig, image_config: dict[str, Any]) -> list[str]:
    """Docker's rules: ``command`` replaces Entrypoint and clears the image Cmd; ``args``
    replaces Cmd. Raises ValidationError when nothing is left to run."""
    entrypoint = list(image_config.get("Entrypoint") or [])
    cmd = list(image_config.get("Cmd") or [])
    if config.command is not None:
        entrypoint, cmd = list(config.command), []
    if config.args is not None:
        cmd = list(config.args)
    argv = entrypoint + cmd
    if not argv:
        raise ValidationError(
            f"container {config.id}: no command to run: image {config.image} has no "
            "Entrypoint or Cmd and none was given"
        )
    return argv


def merge_env(base: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """Apply "K=V" overrides over a base env, keeping the base order; new keys go last.
    An override without "=" is kept only if the base defines it (as Docker does with -e K)."""
    merged: dict[str, str] = {}
    for entry in base:
        key, sep, _ = entry.partition("=")
        if sep:
            merged[key] = entry
    for entry in overrides:
        key, sep, _ = entry.partition("=")
        if sep:
            merged[key] = entry
    return list(merged.values())


def _env_has(env: list[str], key: str) -> bool:
    return any(e.partition("=")[0] == key for e in env)


def _parse_table(text: str, min_fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) >= min_fields:
            rows.append(fields)
    return rows


def resolve_user(spec: str, passwd: str = "", group: str = "") -> ExecUser:
    """Resolve "user[:group]" (names or numbers) against /etc/passwd and /etc/group text,
    as runc's libcontainer/user does for Docker. An empty spec means root."""
    user_part, _, group_part = (spec or "").partition(":")
    users = _parse_table(passwd, 7)  # name:pw:uid:gid:gecos:home:shell
    groups = _parse_table(group, 4)  # name:pw:gid:members
    uid, gid, home, name = 0, 0, "/", "root"
    entry = None
    if user_part:
        if user_part.isdigit():
            uid = int(user_part)
            entry = next((u for u in users if u[2] == user_part), None)
        else:
            entry = next((u for u in users if u[0] == user_part), None)
            if entry is None:
                raise ValidationError(f"unable to find user {user_part}: no matching entries")
    else:
        entry = next((u for u in users if u[2] == "0"), None)
    if entry is not None:
        name, uid, home = entry[0], int(entry[2]), entry[5] or "/"
        gid = int(entry[3]) if entry[3].isdigit() else 0
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            g = next((g for g in groups if g[0] == group_part), None)
            if g is None:
                raise ValidationError(f"unable to find group {group_part}: no matching entries")
            gid = int(g[2])
    extra: list[int] = []
    if entry is not None and not group_part:
        for g in groups:
            members = [m for m in g[3].split(",") if m]
            if name in members and g[2].isdigit() and int(g[2]) != gid:
                extra.append(int(g[2]))
    return ExecUser(uid=uid, gid=gid, additional_gids=tuple(sorted(set(extra))), home=home)


def signal_number(sig: str) -> int | None:
    """The number of a signal named like "SIGTERM", "TERM", "15" or "SIGRTMIN+3" (as
    Docker accepts them); None when it names no signal of this host."""
    name = sig.strip().upper()
    if name.isdigit():
        number = int(name)
        return number if 0 < number <= signals.SIGRTMAX else None
    name = name if name.startswith("SIG") else "SIG" + name
    for base, sign in (("SIGRTMIN+", 1), ("SIGRTMAX-", -1)):
        offset = name.removeprefix(base)
        if offset != name:
            if not offset.isdigit():
                return None
            number = (signals.SIGRTMIN if sign > 0 else signals.SIGRTMAX) + sign * int(offset)
            return number if signals.SIGRTMIN <= number <= signals.SIGRTMAX else None
    try:
        return signals.Signals[name].value
    except KeyError:
        return None


def valid_stop_signal(sig: str, container_id: str) -> str:
    """``sig`` when it names a signal, else SIGTERM with a warning: a bad StopSignal in an
    image must not stop a container from being stopped gracefully."""
    if signal_number(sig) is not None:
        return sig
    log.warning("container %s: unknown stop signal %r, using SIGTERM", container_id, sig)
    return "SIGTERM"


def resolve_stop_signal(config: ContainerConfig, image_config: dict[str, Any]) -> str:
    """The signal stop() sends: the config's, else the image's StopSignal, else SIGTERM
    (also when the one given names no signal)."""
    sig = config.stop_signal or image_config.get("StopSignal") or "SIGTERM"
    sig = str(sig).strip().upper()
    if not sig.isdigit() and not sig.startswith("SIG"):
        sig = "SIG" + sig
    return valid_stop_signal(sig, config.id)


def _resources(config: ContainerConfig, swap_accounting: bool, default_pids: int) -> dict[str, Any]:
    limits = config.limits
    res: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if limits.memory_bytes > 0:
        res["memory"] = {"limit": limits.memory_bytes}
        if swap_accounting:
            res["memory"]["swap"] = limits.memory_bytes
    if limits.nano_cpus > 0:
        quota = max(1000, limits.nano_cpus * CPU_PERIOD_US // 1_000_000_000)
        res["cpu"] = {"quota": quota, "period": CPU_PERIOD_US}
    res["pids"] = {"limit": limits.pids if limits.pids > 0 else default_pids}
    return res


# runc appends "c *:* m" and "b *:* m" (mknod of any device) to every container's device
# rules and cannot be told not to. On cgroup v1 a createRuntime hook (run by runc after
# it wrote the rules, before the container's process starts) takes them out again; the
# cgroup dir is passed as $1, never spliced into the script. On v2 the rules are a BPF
# program runc builds; there only the missing CAP_MKNOD stands in the way.
_DENY_MKNOD = 'echo "c *:* m" > "$1/devices.deny" && echo "b *:* m" > "$1/devices.deny"'


def _hooks(devices_v1_dir: str | None) -> dict[str, Any]:
    if devices_v1_dir is None:
        return {}
    hook = {"path": "/bin/sh", "args": ["sh", "-c", _DENY_MKNOD, "sh", devices_v1_dir]}
    return {"hooks": {"createRuntime": [hook]}}


def _bind_mounts(config: ContainerConfig) -> list[dict[str, Any]]:
    mounts = []
    for m in config.mounts:
        if not m.destination.startswith("/"):
            raise ValidationError(
                f"container {config.id}: mount destination {m.destination!r} is not absolute"
            )
        opts = ["rbind", "rprivate", "ro" if m.readonly else "rw"]
        mounts.append(_mount(m.destination, "bind", m.source, opts))
    return mounts


def build_spec(
    config: ContainerConfig,
    image_config: dict[str, Any],
    *,
    rootfs: str,
    cgroups_path: str,
    passwd: str = "",
    group: str = "",
    swap_accounting: bool = True,
    nofile: int = DEFAULT_NOFILE,
    default_pids: int = DEFAULT_PIDS_LIMIT,
    arch: str | None = None,
    devices_v1_dir: str | None = None,
) -> dict[str, Any]:
    """The OCI runtime config.json for ``config`` running an image with ``image_config``.

    ``passwd``/``group`` are the image's /etc/passwd and /etc/group (for user names and
    supplementary groups); ``swap_accounting`` says whether the host can cap swap;
    ``nofile`` is RLIMIT_NOFILE (it may not exceed the runtime's own hard limit);
    ``default_pids`` the pids limit when the config sets none; ``arch`` picks the seccomp
    architectures (default: this host's); ``devices_v1_dir`` is the container's cgroup
    v1 devices dir, where a hook removes runc's mknod-anything rules (None on v2)."""
    argv = resolve_argv(config, image_config)
    user = resolve_user(config.user or image_config.get("User") or "", passwd, group)
    hostname = config.hostname or config.id[:12]
    env = merge_env(image_config.get("Env") or [], config.env)
    if not _env_has(env, "PATH"):
        env.insert(0, "PATH=" + DEFAULT_PATH)
    if not _env_has(env, "HOSTNAME"):
        env.append("HOSTNAME=" + hostname)
    if not _env_has(env, "HOME"):
        env.append("HOME=" + user.home)
    cwd = config.workdir or image_config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise ValidationError(f"container {config.id}: working dir {cwd!r} is not absolute")

    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
        {"type": "cgroup"},
    ]
    if config.netns_path is not None:
        namespaces.append({"type": "network", "path": config.netns_path})

    caps = list(DEFAULT_CAPABILITIES)
    user_spec: dict[str, Any] = {"uid": user.uid, "gid": user.gid, "umask": 0o022}
    if user.additional_gids:
        user_spec["additionalGids"] = list(user.additional_gids)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": user_spec,
            "args": argv,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": list(caps),
                "permitted": list(caps),
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile},
            ],
            "noNewPrivileges": True,
            "oomScoreAdj": CONTAINER_OOM_SCORE_ADJ,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "mounts": [{**m, "options": list(m["options"])} for m in STANDARD_MOUNTS]
        + _bind_mounts(config),
        "annotations": dict(config.labels),
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": _resources(config, swap_accounting, default_pids),
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": default_profile(arch or host_arch()),
        },
        **_hooks(devices_v1_dir),
    }
