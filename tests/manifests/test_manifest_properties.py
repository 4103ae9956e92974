"""Property tests: valid specs survive render -> load, and error lines point at the field."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orch.errors import ValidationError
from orch.manifests.limits import MAX_REPLICAS
from orch.manifests.loader import load_text
from orch.manifests.render import spec_to_manifest
from orch.manifests.validate import (
    MIN_MEMORY_LIMIT,
    MIN_NANO_CPUS,
    SIGNALS,
    validate_service_spec,
)
from orch.proto import specs_pb2, types_pb2

DNS_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
ENV_KEY = st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True).filter(
    lambda k: not k.startswith("ORCH_")
)
LABEL_KEY = st.from_regex(r"[a-z0-9]([a-z0-9./_-]{0,10}[a-z0-9])?", fullmatch=True)
TEXT = st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)), max_size=20)
LABEL_VALUE = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=20)
NANOS = st.integers(min_value=0, max_value=10**15)


def _duration(nanos: int) -> object:
    from google.protobuf.duration_pb2 import Duration

    duration = Duration()
    duration.FromNanoseconds(nanos)
    return duration


@st.composite
def services(draw: st.DrawFn) -> specs_pb2.ServiceSpec:
    spec = specs_pb2.ServiceSpec(name=draw(DNS_LABEL), replicas=draw(st.integers(0, MAX_REPLICAS)))
    spec.labels.update(draw(st.dictionaries(LABEL_KEY, LABEL_VALUE, max_size=3)))
    c = spec.container
    c.image = draw(
        st.sampled_from(["busybox", "127.0.0.1:5000/busybox:latest", "oci:/srv/images/app:v1"])
    )
    c.command.extend(draw(st.lists(TEXT.filter(bool), max_size=3)))
    c.args.extend(draw(st.lists(TEXT, max_size=3)))
    env = draw(st.dictionaries(ENV_KEY, TEXT, max_size=4))
    c.env.extend(f"{k}={v}" for k, v in env.items())
    c.workdir = draw(st.sampled_from(["", "/", "/www", "/a b/c"]))
    c.hostname = draw(st.one_of(st.just(""), DNS_LABEL))
    c.user = draw(st.sampled_from(["", "0", "1000", "1000:1000"]))
    if draw(st.booleans()):
        c.stop_grace_period.CopyFrom(_duration(draw(NANOS)))
    c.stop_signal = draw(st.sampled_from(["", *SIGNALS]))
    c.labels.update(draw(st.dictionaries(LABEL_KEY, LABEL_VALUE, max_size=3)))
    limit_cpu = draw(st.one_of(st.just(0), st.integers(MIN_NANO_CPUS, 64 * 10**9)))
    limit_mem = draw(st.one_of(st.just(0), st.integers(MIN_MEMORY_LIMIT, 2**40)))
    reserve_cpu = draw(st.integers(0, limit_cpu or 10**10))
    reserve_mem = draw(st.integers(0, limit_mem or 2**40))
    pids = draw(st.integers(0, 10**6))
    if limit_cpu or limit_mem or pids:
        spec.resources.limits.CopyFrom(
            types_pb2.Resources(nano_cpus=limit_cpu, memory_bytes=limit_mem, pids=pids)
        )
    if reserve_cpu or reserve_mem:
        spec.resources.reservations.CopyFrom(
            types_pb2.Resources(nano_cpus=reserve_cpu, memory_bytes=reserve_mem)
        )
    if draw(st.booleans()):
        policy = spec.restart_policy
        policy.condition = draw(st.sampled_from(types_pb2.RestartCondition.values()))
        policy.max_attempts = draw(st.integers(0, 2**32 - 1))
        delay = draw(NANOS)
        for field, value in (("delay", delay), ("window", draw(NANOS)), ("max_delay", delay * 2)):
            if draw(st.booleans()):
                getattr(policy, field).CopyFrom(_duration(value))
        if policy == types_pb2.RestartPolicy():  # the loader keeps no empty messages
            spec.ClearField("restart_policy")
    names = draw(
        st.lists(DNS_LABEL.filter(lambda n: n not in ("host", "none")), max_size=3, unique=True)
    )
    for name in names:
        spec.networks.add(target=name, aliases=draw(st.lists(DNS_LABEL, max_size=2, unique=True)))
    published = draw(st.lists(st.integers(1, 65535), max_size=3, unique=True))
    for port in published:
        spec.ports.add(
            target=draw(st.integers(1, 65535)),
            published=port,
            protocol=draw(st.sampled_from(["tcp", "udp"])),
            mode="host",
        )
    return spec


@settings(max_examples=100, deadline=None)
@given(services())
def test_valid_specs_survive_render_and_load(spec: specs_pb2.ServiceSpec) -> None:
    assert validate_service_spec(spec) == []
    document = spec_to_manifest(spec)
    text = yaml.safe_dump(document, sort_keys=False)
    [loaded] = load_text(text, "gen.yaml").services
    assert loaded == spec
    assert spec_to_manifest(loaded) == document


# (key, good value, bad value, path the problem names, lines from the key to the problem)
FIELDS = [
    ("image", "busybox", "[1]", "spec.image", 0),
    ("replicas", "2", "-1", "spec.replicas", 0),
    ("workdir", "/www", "www", "spec.workdir", 0),
    ("hostname", "h1", "Bad_Host", "spec.hostname", 0),
    ("user", "'1000'", "root", "spec.user", 0),
    ("stop_grace_period", "5s", "5 parsecs", "spec.stop_grace_period", 0),
    ("stop_signal", "TERM", "SIGNOPE", "spec.stop_signal", 0),
    ("command", "[sh]", "{a: 1}", "spec.command", 0),
    ("labels", "{a: b}", "{'bad key': x}", 'spec.labels["bad key"]', 0),
    (
        "resources",
        "{limits: {memory: 64Mi}}",
        "{limits: {memory: 1Mi}}",
        "spec.resources.limits.memory",
        0,
    ),
    ("env", "\n    A: b\n    C: d", "\n    A: b\n    ORCH_X: c", "spec.env[1]", 2),
    ("networks", "\n    - front\n    - back", "\n    - front\n    - host", "spec.networks[1]", 2),
    (
        "ports",
        "\n    - 8080:80\n    - 53:53/udp",
        "\n    - 8080:80\n    - 8080:81",
        "spec.ports[1]",
        2,
    ),
    (
        "restart_policy",
        "\n    delay: 1s",
        "\n    delay: 1s\n    window: soon",
        "spec.restart_policy.window",
        2,
    ),
]
FILLER = st.lists(st.sampled_from(["", "  # a comment", "# another"]), max_size=2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(range(len(FIELDS))),
    bad=st.integers(0, len(FIELDS) - 1),
    fillers=st.lists(FILLER, min_size=len(FIELDS), max_size=len(FIELDS)),
    before=st.integers(0, 2),
)
def test_error_lines_point_at_the_bad_field(
    order: list[int], bad: int, fillers: list[list[str]], before: int
) -> None:
    lines: list[str] = []
    for i in range(before):  # valid documents before, to shift the lines
        lines += ["apiVersion: orch/v1", "kind: Network", f"metadata: {{name: n{i}}}", "---"]
    lines += ["apiVersion: orch/v1", "kind: Service", "metadata:", "  name: web", "spec:"]
    expected = ""
    for position, index in enumerate(order):
        key, good, wrong, path, offset = FIELDS[index]
        lines += fillers[position]
        value = wrong if index == bad else good
        if index == bad:
            expected = f"t.yaml:{len(lines) + 1 + offset}: {path}: "
        separator = "" if value.startswith("\n") else " "  # block values start on the next line
        lines += f"  {key}:{separator}{value}".split("\n")
    try:
        load_text("\n".join(lines) + "\n", "t.yaml")
    except ValidationError as exc:
        assert len(exc.problems) == 1, exc.problems
        assert exc.problems[0].startswith(expected), (exc.problems, "\n".join(lines))
    else:
        raise AssertionError("the bad field was not reported")
