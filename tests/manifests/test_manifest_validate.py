"""The value rules on protobuf specs, as the manager runs them (no YAML involved)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orch.manifests.validate import (
    apply_size_problems,
    validate_network_spec,
    validate_service_spec,
)
from orch.proto import specs_pb2, types_pb2

MI = 2**20


def good_service() -> specs_pb2.ServiceSpec:
    spec = specs_pb2.ServiceSpec(name="web", replicas=3)  # reservation 3Mi <= limit 64Mi
    spec.container.image = "127.0.0.1:5000/busybox:latest"
    spec.container.env.extend(["A=1", "B="])
    spec.resources.limits.memory_bytes = 64 * MI
    spec.resources.limits.nano_cpus = 500_000_000
    spec.resources.reservations.memory_bytes = 3 * MI
    spec.networks.add(target="front", aliases=["www", "web.example"])
    return spec


def test_good_service_has_no_problems() -> None:
    assert validate_service_spec(good_service()) == []


def test_oci_layout_image_and_digest_references_are_accepted() -> None:
    for image in (
        "oci:/var/lib/images/busybox:latest",
        "busybox",
        "localhost:5000/a/b-c_d.e:v1.2",
        "registry.example.com/team/app@sha256:" + "a" * 64,
    ):
        spec = good_service()
        spec.container.image = image
        assert validate_service_spec(spec) == [], image


def _set(path: str, value: object) -> Callable[[specs_pb2.ServiceSpec], None]:
    def change(spec: specs_pb2.ServiceSpec) -> None:
        *parents, last = path.split(".")
        target = spec
        for part in parents:
            target = getattr(target, part)
        setattr(target, last, value)

    return change


def _networks(*targets: str) -> Callable[[specs_pb2.ServiceSpec], None]:
    def change(spec: specs_pb2.ServiceSpec) -> None:
        del spec.networks[:]
        for target in targets:
            spec.networks.add(target=target)

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set("name", ""), "metadata.name: required (accepted: a DNS label"),
        (_set("name", "Web_1"), "metadata.name: invalid name 'Web_1'; did you mean 'web-1'?"),
        (_set("name", "-web"), "metadata.name: invalid name '-web'; did you mean 'web'?"),
        (_set("name", "a" * 64), "metadata.name: invalid name 'aaaa"),
        (_set("container.image", ""), "spec.image: required: the image to run"),
        (
            _set("container.image", "Busybox"),
            "spec.image: invalid image reference 'Busybox'; repository names must be lowercase",
        ),
        (_set("container.image", "bad image"), "spec.image: invalid image reference 'bad image'"),
        (_set("container.image", "oci:relative"), "spec.image: invalid OCI layout reference"),
        (_set("container.workdir", "www"), "spec.workdir: expected an absolute path, got 'www'"),
        (_set("container.hostname", "a_b"), "spec.hostname: invalid hostname 'a_b'"),
        (_set("container.user", "nobody"), "spec.user: invalid user 'nobody' (accepted: uid[:gid]"),
        (_set("container.stop_signal", "SIGFOO"), "spec.stop_signal: unknown signal 'SIGFOO'"),
        (_set("replicas", 10_001), "spec.replicas: expected at most 10000 replicas, got 10001"),
        (
            _set("resources.limits.memory_bytes", 3 * MI + 1),
            "spec.resources.limits.memory: memory limit 3145729 bytes is below the minimum "
            "(accepted: 4Mi",
        ),
        (
            _set("resources.reservations.memory_bytes", 128 * MI),
            "spec.resources.reservations.memory: reservation of 128Mi exceeds the limit of 64Mi",
        ),
        (
            _set("resources.reservations.nano_cpus", 2_000_000_000),
            "spec.resources.reservations.cpus: reservation of 2 CPU exceeds the limit of 0.5",
        ),
        (
            _set("resources.limits.nano_cpus", 1_000_000),
            "spec.resources.limits.cpus: 0.001 CPU is below the smallest a cgroup can enforce",
        ),
        (_set("resources.limits.pids", -1), "spec.resources.limits.pids: expected an integer >= 0"),
        (
            _set("resources.reservations.pids", 10),
            "spec.resources.reservations.pids: pids can only be limited, not reserved",
        ),
        (_set("restart_policy.condition", 99), "spec.restart_policy.condition: unknown condition"),
        (_networks("host", "front"), "spec.networks[0]: 'host' replaces the container's network"),
        (_networks("none", "bridge"), "spec.networks[0]: 'none' replaces"),
        (_networks("front", "front"), "spec.networks[1]: network 'front' is listed twice"),
        (_networks("Front"), "spec.networks[0]: invalid name 'Front'"),
    ],
)
def test_service_rules(change: Callable[[specs_pb2.ServiceSpec], None], expected: str) -> None:
    spec = good_service()
    change(spec)
    problems = validate_service_spec(spec)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (["A"], "spec.env[0]: expected KEY=VALUE, got 'A'"),
        (["=x"], "spec.env[0]: expected KEY=VALUE, got '=x'"),
        (["A=1", "A=2"], "spec.env[1]: A is set twice (first at spec.env[0])"),
        (["ORCH_SLOT=1"], "spec.env[0]: ORCH_SLOT: ORCH_* variables are set by the agent"),
        (["A=x\0y"], "spec.env[0]: A: contains a NUL byte"),
    ],
)
def test_env_rules(env: list[str], expected: str) -> None:
    spec = good_service()
    del spec.container.env[:]
    spec.container.env.extend(env)
    assert [p[: len(expected)] for p in validate_service_spec(spec)] == [expected]


def test_restart_durations_must_be_ordered_and_not_negative() -> None:
    spec = good_service()
    spec.restart_policy.delay.FromSeconds(10)
    spec.restart_policy.max_delay.FromSeconds(5)
    spec.container.stop_grace_period.FromSeconds(-1)
    assert validate_service_spec(spec) == [
        "spec.stop_grace_period: expected a duration >= 0, got -1s",
        "spec.restart_policy.max_delay: max_delay 5s is shorter than delay 10s "
        "(accepted: a max_delay >= delay)",
    ]


def test_aliases_on_host_and_bad_aliases() -> None:
    spec = good_service()
    del spec.networks[:]
    spec.networks.add(target="host", aliases=["x"])
    spec2 = good_service()
    spec2.networks[0].aliases.extend(["Bad_Alias", "www"])
    assert validate_service_spec(spec) == [
        "spec.networks[0].aliases: network mode 'host' takes no aliases"
    ]
    assert [p.split(" (")[0] for p in validate_service_spec(spec2)] == [
        "spec.networks[0].aliases[2]: invalid alias 'Bad_Alias'",
        "spec.networks[0].aliases[3]: alias 'www' is listed twice",
    ]


def test_label_keys() -> None:
    spec = good_service()
    spec.labels["ok.example/key"] = "1"
    spec.container.labels["bad key"] = "1"
    assert validate_service_spec(spec) == [
        "spec.labels[\"bad key\"]: invalid label key 'bad key' (accepted: letters, digits, "
        "'.', '_', '-' and '/', starting and ending alphanumeric)"
    ]


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        ("10.10.0.0/24", None),
        ("192.168.5.0/29", None),
        ("172.16.0.0/12", None),
        ("10.10.0.1/24", "'10.10.0.1/24' has host bits set; did you mean 10.10.0.0/24?"),
        ("8.8.8.0/24", "8.8.8.0/24 is not a private range"),
        ("10.0.0.0/30", "10.0.0.0/30 is too small for tasks and a gateway"),
        ("fd00::/64", "'fd00::/64' is not IPv4"),
        ("10.0.0.0", "'10.0.0.0' has no prefix length"),
        ("banana", "invalid CIDR 'banana'"),
    ],
)
def test_network_subnet(subnet: str, expected: str | None) -> None:
    spec = specs_pb2.NetworkSpec(name="front", driver="overlay", subnet=subnet)
    problems = validate_network_spec(spec)
    if expected is None:
        assert problems == []
    else:
        [problem] = problems
        assert problem.startswith(f"spec.subnet: {expected} (accepted: an IPv4 CIDR in 10.0.0.0/8")


def test_network_name_and_driver() -> None:
    spec = specs_pb2.NetworkSpec(name="host", driver="macvlan")
    assert validate_network_spec(spec) == [
        "metadata.name: 'host' is a built-in network mode (accepted: any other name)",
        "spec.driver: unknown driver 'macvlan' (accepted: overlay)",
    ]
    assert validate_network_spec(specs_pb2.NetworkSpec(name="front")) == []


def test_restart_condition_enum_is_complete() -> None:
    spec = good_service()
    for value in types_pb2.RestartCondition.values():
        spec.restart_policy.condition = value
        assert validate_service_spec(spec) == []


def _fill(field: str, items: list[str]) -> Callable[[specs_pb2.ServiceSpec], None]:
    def change(spec: specs_pb2.ServiceSpec) -> None:
        target = spec.container.healthcheck.exec if field == "health" else spec.container
        getattr(target, "command" if field == "health" else field).extend(items)

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set("name", "a" * 64), "metadata.name: invalid name"),
        (_set("name", "a" * 1000), "metadata.name: 1000 characters, at most 63 allowed"),
        (_set("replicas", 10_001), "spec.replicas: expected at most 10000 replicas, got 10001"),
        (
            _set("replicas", 2**64 - 1),
            f"spec.replicas: expected at most 10000 replicas, got {2**64 - 1}",
        ),
        (_fill("env", [f"K{i}=v" for i in range(1025)]), "spec.env: 1027 entries, at most 1024"),
        (_fill("env", ["K=" + "v" * 131072]), "spec.env: 131079 bytes, at most 131072"),
        (_fill("command", ["a"] * 1025), "spec.command: 1025 arguments, at most 1024 allowed"),
        (_fill("args", ["a" * 131073]), "spec.args: 131073 bytes, at most 131072"),
        (_fill("health", ["a" * 16385]), "spec.healthcheck.exec: 16385 bytes, at most"),
        (_set("container.workdir", "/" * 4097), "spec.workdir: 4097 characters, at most 4096"),
        (_fill("args", ["a" * 100_000] * 3), "spec (encoded): 300"),
    ],
    ids=[
        "name-64",
        "name-huge",
        "replicas",
        "replicas-uint64",
        "env-count",
        "env-bytes",
        "command-count",
        "args-bytes",
        "health-bytes",
        "workdir",
        "spec-bytes",
    ],
)
def test_size_limits_name_the_field_and_the_limit(
    change: Callable[[specs_pb2.ServiceSpec], None], expected: str
) -> None:
    spec = good_service()
    change(spec)
    problems = validate_service_spec(spec)
    assert any(p.startswith(expected) for p in problems), problems
    assert all("\n" not in p and len(p) < 400 for p in problems), problems


def test_list_limits() -> None:
    spec = good_service()
    spec.networks[0].aliases.extend(f"a{i}" for i in range(64))
    for port in range(1000, 1257):
        spec.ports.add(published=port, target=80)
    spec.placement.constraints.extend(["node.labels.a==b"] * 65)
    for i in range(32):
        spec.networks.add(target=f"n{i}")
    assert validate_service_spec(spec)[:4] == [
        "spec.networks: 33 networks, at most 32 allowed",
        "spec.ports: 257 ports, at most 256 allowed",
        "spec.networks[0].aliases: 66 aliases, at most 64 allowed",
        "spec.placement.constraints: 65 constraints, at most 64 allowed",
    ]


def test_label_count_and_value_limits() -> None:
    spec = good_service()
    spec.labels.update({f"k{i}": "v" for i in range(65)})
    spec.container.labels["long"] = "v" * 1025
    assert validate_service_spec(spec) == [
        "metadata.labels: 65 labels, at most 64 allowed",
        "spec.labels.long: 1025 characters, at most 1024 allowed",
    ]


def test_an_apply_larger_than_one_etcd_request_is_refused() -> None:
    spec = good_service()
    spec.container.args.append("a" * 200_000)
    assert apply_size_problems([spec] * 2) == []
    assert apply_size_problems([spec] * 3)[0].startswith("apply (encoded): 600")
