"""Unit tests of the pure OCI spec builder: Docker's entrypoint/cmd, env and user rules,
the default security settings, limits and namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.errors import ContainerError, ValidationError
from orch.runtime.model import BindMount, ContainerConfig, Limits
from orch.runtime.seccomp import allowed_names, default_profile
from orch.runtime.settings import RuntimeSettings
from orch.runtime.spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    DEFAULT_PIDS_LIMIT,
    build_spec,
    merge_env,
    resolve_argv,
    resolve_stop_signal,
    resolve_user,
)

IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["serve", "--port=80"], "Env": ["PATH=/img/bin", "A=1"]}
PASSWD = """root:x:0:0:root:/root:/bin/sh
# comment
www-data:x:33:33:www:/var/www:/bin/false
app:x:1000:1000::/home/app:/bin/sh
"""
GROUP = """root:x:0:
www-data:x:33:
app:x:1000:
video:x:44:app,other
audio:x:29:other
"""


def cfg(**kw: object) -> ContainerConfig:
    return ContainerConfig(**{"id": "c0123456789abcdef", "image": "img:1", **kw})  # type: ignore[arg-type]


def spec(image: dict | None = None, arch: str | None = None, **kw: object) -> dict:
    return build_spec(
        cfg(**kw),
        IMAGE if image is None else image,
        rootfs="/r/rootfs",
        cgroups_path="/orch-a/c0123456789abcdef",
        passwd=PASSWD,
        group=GROUP,
        arch=arch,
    )


@pytest.mark.parametrize(
    ("command", "args", "argv"),
    [
        (None, None, ["/entry", "serve", "--port=80"]),
        (None, ["x", "y"], ["/entry", "x", "y"]),
        (["/bin/sh", "-c"], None, ["/bin/sh", "-c"]),  # command drops the image Cmd
        (["/bin/sh", "-c"], ["echo hi"], ["/bin/sh", "-c", "echo hi"]),
        ([], ["only", "args"], ["only", "args"]),  # an emptied entrypoint, as --entrypoint ""
    ],
)
def test_argv_follows_docker_rules(command, args, argv) -> None:
    assert resolve_argv(cfg(command=command, args=args), IMAGE) == argv


def test_image_cmd_alone_and_empty_argv_is_a_clear_error() -> None:
    assert resolve_argv(cfg(), {"Cmd": ["sh"]}) == ["sh"]
    with pytest.raises(ValidationError, match=r"c0123456789abcdef: no command to run.*img:1"):
        resolve_argv(cfg(), {})
    with pytest.raises(ValidationError, match="no command"):
        resolve_argv(cfg(command=[]), IMAGE)


def test_env_overrides_keep_order_and_add_defaults() -> None:
    assert merge_env(["A=1", "B=2"], ["B=3", "C=4", "NOEQ"]) == ["A=1", "B=3", "C=4"]
    env = spec(env=["A=2", "NEW=x"])["process"]["env"]
    assert env[:3] == ["PATH=/img/bin", "A=2", "NEW=x"]
    assert "HOSTNAME=c0123456789a" in env and "HOME=/root" in env
    bare = spec(image={"Cmd": ["sh"]})["process"]["env"]
    assert bare[0] == "PATH=" + DEFAULT_PATH
    mine = spec(env=["HOME=/x", "HOSTNAME=h"], hostname="web-1")["process"]["env"]
    assert "HOME=/x" in mine and "HOSTNAME=h" in mine and "HOSTNAME=web-1" not in mine


def test_user_resolution() -> None:
    assert resolve_user("", PASSWD, GROUP).home == "/root"
    app = resolve_user("app", PASSWD, GROUP)
    assert (app.uid, app.gid, app.additional_gids, app.home) == (1000, 1000, (44,), "/home/app")
    assert resolve_user("33", PASSWD, GROUP).home == "/var/www"
    numeric = resolve_user("4242:4343", PASSWD, GROUP)
    assert (numeric.uid, numeric.gid, numeric.home) == (4242, 4343, "/")
    named_group = resolve_user("app:audio", PASSWD, GROUP)
    assert (named_group.gid, named_group.additional_gids) == (29, ())
    assert resolve_user("5", "", "").uid == 5  # images without /etc/passwd
    with pytest.raises(ValidationError, match="unable to find user ghost"):
        resolve_user("ghost", PASSWD, GROUP)
    with pytest.raises(ValidationError, match="unable to find group nope"):
        resolve_user("app:nope", PASSWD, GROUP)


def test_user_from_config_wins_over_image_user() -> None:
    s = spec(image={**IMAGE, "User": "www-data"})
    assert s["process"]["user"]["uid"] == 33
    s = spec(image={**IMAGE, "User": "www-data"}, user="app")
    assert s["process"]["user"] == {
        "uid": 1000,
        "gid": 1000,
        "umask": 0o022,
        "additionalGids": [44],
    }


def test_docker_like_defaults() -> None:
    s = spec()
    p = s["process"]
    assert p["terminal"] is False
    assert p["cwd"] == "/"
    assert p["capabilities"]["bounding"] == DEFAULT_CAPABILITIES
    assert "CAP_SYS_ADMIN" not in p["capabilities"]["effective"]
    assert len(DEFAULT_CAPABILITIES) == 13  # Docker's 14 minus CAP_MKNOD
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]
    assert s["root"] == {"path": "/r/rootfs", "readonly": False}
    assert s["hostname"] == "c0123456789a"
    mounts = {m["destination"]: m for m in s["mounts"]}
    for dest in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"):
        assert dest in mounts
    assert "ro" in mounts["/sys"]["options"] and "ro" in mounts["/sys/fs/cgroup"]["options"]
    assert "/proc/kcore" in s["linux"]["maskedPaths"]
    assert "/proc/sys" in s["linux"]["readonlyPaths"]
    assert s["linux"]["cgroupsPath"] == "/orch-a/c0123456789abcdef"
    assert s["linux"]["resources"] == {
        "devices": [{"allow": False, "access": "rwm"}],
        "pids": {"limit": DEFAULT_PIDS_LIMIT},
    }


def test_stricter_than_docker_defaults() -> None:
    s = spec()
    p = s["process"]
    assert "CAP_MKNOD" not in p["capabilities"]["bounding"]
    assert p["noNewPrivileges"] is True
    assert p["oomScoreAdj"] == 0  # never the agent's own -999
    assert {"/proc/interrupts", "/proc/keys", "/sys/firmware"} <= set(s["linux"]["maskedPaths"])
    assert {"/proc/sys", "/proc/sysrq-trigger"} <= set(s["linux"]["readonlyPaths"])
    assert s["linux"]["resources"]["pids"] == {"limit": 4096}
    custom = build_spec(cfg(), IMAGE, rootfs="/r", cgroups_path="/x/y", default_pids=64)
    assert custom["linux"]["resources"]["pids"] == {"limit": 64}
    with pytest.raises(ValidationError, match="must be a positive number"):
        RuntimeSettings(state_dir=Path("/s"), runc_root=Path("/r"), default_pids_limit=0)


def test_a_hook_removes_runcs_mknod_rules_on_cgroup_v1() -> None:
    assert "hooks" not in spec()  # v2: nothing to do it with
    v1 = build_spec(cfg(), IMAGE, rootfs="/r", cgroups_path="/x/y", devices_v1_dir="/cg/x/y")
    (hook,) = v1["hooks"]["createRuntime"]
    assert hook["path"] == "/bin/sh" and hook["args"][-1] == "/cg/x/y"  # an argument, not code
    assert 'echo "c *:* m" > "$1/devices.deny"' in hook["args"][2]


def test_seccomp_profile_is_an_allow_list() -> None:
    sec = spec(arch="amd64")["linux"]["seccomp"]
    assert (sec["defaultAction"], sec["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    assert sec["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = allowed_names("amd64")
    assert {"read", "execve", "clone", "socket", "arch_prctl", "chroot"} <= allowed
    refused = {"mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key",
               "bpf", "perf_event_open", "kexec_load", "init_module", "userfaultfd",
               "open_by_handle_at", "io_uring_setup", "reboot", "swapon", "pivot_root"}  # fmt: skip
    assert not refused & allowed
    (clone,) = [r for r in sec["syscalls"] if r["names"] == ["clone"]]
    assert clone["args"] == [
        {"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    (clone3,) = [r for r in sec["syscalls"] if r["names"] == ["clone3"]]
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    assert len([r for r in sec["syscalls"] if r["names"] == ["personality"]]) == 5
    arm = default_profile("arm64")
    assert "arch_prctl" not in {n for r in arm["syscalls"] for n in r["names"]}
    assert "set_tls" in allowed_names("arm64")
    with pytest.raises(ContainerError, match="does not cover architecture mips"):
        default_profile("mips")


def test_workdir_hostname_labels() -> None:
    s = spec(image={**IMAGE, "WorkingDir": "/srv"})
    assert s["process"]["cwd"] == "/srv"
    s = spec(
        image={**IMAGE, "WorkingDir": "/srv"}, workdir="/data", hostname="web-1", labels={"a": "b"}
    )
    assert (s["process"]["cwd"], s["hostname"], s["annotations"]) == ("/data", "web-1", {"a": "b"})
    with pytest.raises(ValidationError, match="not absolute"):
        spec(workdir="rel")


def test_limits_become_cgroup_resources() -> None:
    s = spec(limits=Limits(nano_cpus=1_500_000_000, memory_bytes=64 << 20, pids=100))
    res = s["linux"]["resources"]
    assert res["cpu"] == {"quota": 150_000, "period": 100_000}
    assert res["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert res["pids"] == {"limit": 100}
    tiny = build_spec(
        cfg(limits=Limits(nano_cpus=1, memory_bytes=1 << 20)),
        IMAGE,
        rootfs="/r",
        cgroups_path="/x/y",
        swap_accounting=False,
        nofile=4096,
    )
    assert tiny["linux"]["resources"]["cpu"]["quota"] == 1000  # runc's minimum
    assert tiny["linux"]["resources"]["memory"] == {"limit": 1 << 20}
    assert tiny["process"]["rlimits"][0]["hard"] == 4096


def test_namespaces_and_network() -> None:
    host = spec()
    types = [n["type"] for n in host["linux"]["namespaces"]]
    assert set(types) == {"pid", "ipc", "uts", "mount", "cgroup"}  # no netns: the host's
    joined = spec(netns_path="/run/netns/orch-x")
    assert {"type": "network", "path": "/run/netns/orch-x"} in joined["linux"]["namespaces"]


def test_bind_mounts() -> None:
    s = spec(
        mounts=[
            BindMount("/h/resolv.conf", "/etc/resolv.conf"),
            BindMount("/h/data", "/data", readonly=False),
        ]
    )
    binds = [m for m in s["mounts"] if m["type"] == "bind"]
    assert binds == [
        {
            "destination": "/etc/resolv.conf",
            "type": "bind",
            "source": "/h/resolv.conf",
            "options": ["rbind", "rprivate", "ro"],
        },
        {
            "destination": "/data",
            "type": "bind",
            "source": "/h/data",
            "options": ["rbind", "rprivate", "rw"],
        },
    ]
    with pytest.raises(ValidationError, match="not absolute"):
        spec(mounts=[BindMount("/h", "etc/x")])


def test_stop_signal_resolution() -> None:
    assert resolve_stop_signal(cfg(), {}) == "SIGTERM"
    assert resolve_stop_signal(cfg(), {"StopSignal": "SIGQUIT"}) == "SIGQUIT"
    assert resolve_stop_signal(cfg(stop_signal="int"), {"StopSignal": "SIGQUIT"}) == "SIGINT"
    assert resolve_stop_signal(cfg(stop_signal="9"), {}) == "9"
    assert resolve_stop_signal(cfg(), {"StopSignal": "RTMIN+3"}) == "SIGRTMIN+3"


def test_an_invalid_stop_signal_falls_back_to_sigterm(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_stop_signal(cfg(), {"StopSignal": "SIGNOPE"}) == "SIGTERM"
    assert "unknown stop signal 'SIGNOPE', using SIGTERM" in caplog.text
    assert resolve_stop_signal(cfg(stop_signal="99"), {}) == "SIGTERM"


def test_spec_does_not_share_mutable_defaults() -> None:
    a = spec()
    a["mounts"][0]["options"].append("x")
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    a["linux"]["seccomp"]["syscalls"][0]["names"].append("mount")
    b = spec()
    assert "mount" not in b["linux"]["seccomp"]["syscalls"][0]["names"]
    assert "x" not in b["mounts"][0]["options"]
    assert "CAP_SYS_ADMIN" not in b["process"]["capabilities"]["bounding"]


def test_container_config_round_trips_through_json() -> None:
    c = cfg(
        command=["a"],
        limits=Limits(memory_bytes=5),
        mounts=[BindMount("/a", "/b", readonly=False)],
        labels={"k": "v"},
        stop_grace_seconds=2.5,
    )
    assert ContainerConfig.from_json(c.to_json()) == c
