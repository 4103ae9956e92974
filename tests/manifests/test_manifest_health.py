"""spec.healthcheck: loading, the value rules (file:line, field, what is accepted), and
rendering back unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from manifest_helpers import load, problems_of, service

from orch.manifests.loader import load_text
from orch.manifests.render import spec_to_manifest, specs_to_yaml
from orch.manifests.validate import validate_service_spec
from orch.proto import specs_pb2


def check_of(body: str) -> specs_pb2.HealthCheck:
    [spec] = load(service(f"image: busybox\nhealthcheck:\n{body}")).services
    return spec.container.healthcheck


def problems(body: str) -> list[str]:
    return problems_of(service(f"image: busybox\nhealthcheck:\n{body}"))


def test_http_check_with_settings() -> None:
    check = check_of(
        """
          http: {port: 8080, path: /health}
          interval: 5s
          timeout: 2s
          retries: 2
          start_period: 1m
        """
    )
    assert check.WhichOneof("probe") == "http"
    assert (check.http.port, check.http.path, check.http.scheme) == (8080, "/health", "http")
    assert check.interval.ToNanoseconds() == 5 * 10**9
    assert check.timeout.ToNanoseconds() == 2 * 10**9
    assert check.retries == 2
    assert check.start_period.ToNanoseconds() == 60 * 10**9


def test_defaults_are_left_to_the_agent() -> None:
    """Unset settings stay unset in the spec (the agent applies Docker's defaults), so a
    spec says only what its author said; the http path defaults to /."""
    check = check_of("  http: {port: 80}\n")
    assert (check.http.path, check.http.scheme) == ("/", "http")
    assert not check.HasField("interval") and not check.HasField("timeout")
    assert check.retries == 0 and not check.HasField("start_period")


def test_exec_as_list_or_shell_string_and_tcp() -> None:
    assert list(check_of("  exec: [cat, /tmp/ok]\n").exec.command) == ["cat", "/tmp/ok"]
    assert list(check_of("  exec: test -f /tmp/ok\n").exec.command) == [
        "/bin/sh",
        "-c",
        "test -f /tmp/ok",
    ]
    assert check_of("  tcp: {port: 5432}\n").tcp.port == 5432


@pytest.mark.parametrize(
    ("body", "line", "expected"),
    [
        (
            "  http: {port: 80}\n  interval: 0s\n",
            9,
            "spec.healthcheck.interval: expected at least 100ms, got 0s (accepted: a duration",
        ),
        (
            "  http: {port: 80}\n  interval: -1s\n",
            9,
            "spec.healthcheck.interval: invalid duration '-1s'",
        ),
        (
            "  tcp: {port: 80}\n  timeout: 0s\n",
            9,
            "spec.healthcheck.timeout: expected a duration > 0, got 0s",
        ),
        (
            "  grpc: {port: 80}\n",
            8,
            "spec.healthcheck.grpc: unknown probe type 'grpc' (accepted: a probe: exec, http, "
            "tcp; and the settings interval, timeout, retries, start_period)",
        ),
        (
            "  http: {port: 80}\n  tcp: {port: 80}\n",
            7,
            "spec.healthcheck: more than one probe given (http, tcp) (accepted: exactly one "
            "of exec, http, tcp)",
        ),
        ("  interval: 5s\n", 7, "spec.healthcheck: no probe given"),
        (
            "  http:\n    port: 80\n    path: health\n",
            10,
            "spec.healthcheck.http.path: expected a path starting with '/', got 'health' "
            "(accepted: e.g. /health)",
        ),
        (
            "  http: {port: 80, path: '/a b'}\n",
            8,
            "spec.healthcheck.http.path: the path '/a b' contains spaces",
        ),
        (
            "  http: {port: 80, scheme: ftp}\n",
            8,
            "spec.healthcheck.http.scheme: unknown scheme 'ftp' (accepted: http, https)",
        ),
        ("  http: {path: /}\n", 8, "spec.healthcheck.http.port: required field missing"),
        (
            "  tcp:\n    port: 70000\n",
            9,
            "spec.healthcheck.tcp.port: expected a port 1-65535, got 70000",
        ),
        ("  http: {port: 0}\n", 8, "spec.healthcheck.http.port: expected a port 1-65535, got 0"),
        (
            "  tcp: {port: 1}\n  retries: 0\n",
            9,
            "spec.healthcheck.retries: expected an integer >= 1",
        ),
        ("  exec: ''\n", 8, "spec.healthcheck.exec: the command cannot be empty"),
        ("  exec: []\n", 7, "spec.healthcheck: exec: the command cannot be empty"),
        ("  tcp: {port: 0}\n", 8, "spec.healthcheck.tcp.port: expected a port 1-65535, got 0"),
        ("  port: 80\n", 8, "spec.healthcheck.port: 'port' belongs inside the probe"),
        (
            "  tcp: {port: 80}\n  intervall: 1s\n",
            9,
            "spec.healthcheck.intervall: unknown field; did you mean 'spec.healthcheck.interval'?",
        ),
        ("  - http\n", 7, "spec.healthcheck: expected a mapping with one probe"),
    ],
)
def test_bad_checks_name_file_line_field_and_accepted(body: str, line: int, expected: str) -> None:
    [problem] = problems(body)
    assert problem.startswith(f"t.yaml:{line}: "), problem
    assert expected in problem, problem


def test_manager_rules_on_the_protobuf() -> None:
    """Clients other than the loader send protobufs; the manager's checks catch the same."""
    spec = specs_pb2.ServiceSpec(name="web", replicas=1)
    spec.container.image = "busybox"
    spec.container.healthcheck.retries = 2  # no probe
    assert validate_service_spec(spec) == [
        "spec.healthcheck: no probe given (accepted: exactly one of exec, http, tcp)"
    ]
    spec.container.healthcheck.exec.command.append("")
    assert validate_service_spec(spec) == ["spec.healthcheck.exec: the command cannot be empty"]
    spec.container.healthcheck.http.port = 80  # replaces exec (one probe)
    spec.container.healthcheck.interval.FromMilliseconds(50)
    assert validate_service_spec(spec) == [
        "spec.healthcheck.interval: expected at least 100ms, got 50ms (accepted: a duration "
        'like "100ms", "5s", "1m30s", "2h", or a number of seconds; default 30s)'
    ]


def test_render_is_the_short_form() -> None:
    [spec] = load(
        service(
            """
            image: busybox
            healthcheck:
              exec: test -f /tmp/ok
              interval: 1500ms
              retries: 5
            """
        )
    ).services
    assert spec_to_manifest(spec)["spec"]["healthcheck"] == {
        "exec": "test -f /tmp/ok",
        "interval": "1.5s",
        "retries": 5,
    }


_durations = st.one_of(st.none(), st.integers(100, 3_600_000).map(lambda ms: f"{ms}ms"))


@st.composite
def healthchecks(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["exec-list", "exec-shell", "http", "tcp"]))
    port = draw(st.integers(1, 65535))
    lines = {
        "exec-list": "  exec: [cat, /tmp/ok]",
        "exec-shell": "  exec: 'test -f /tmp/ok && echo ok'",
        "http": f"  http: {{port: {port}, path: /{draw(st.sampled_from(['', 'h', 'a/b?c=1']))}, "
        f"scheme: {draw(st.sampled_from(['http', 'https']))}}}",
        "tcp": f"  tcp: {{port: {port}}}",
    }
    body = [lines[kind]]
    for name in ("interval", "timeout", "start_period"):
        value = draw(_durations)
        if value is not None:
            body.append(f"  {name}: {value}")
    retries = draw(st.one_of(st.none(), st.integers(1, 100)))
    if retries is not None:
        body.append(f"  retries: {retries}")
    return "\n".join(body) + "\n"


@given(healthchecks())
def test_round_trip(body: str) -> None:
    manifest = load(service(f"image: busybox\nhealthcheck:\n{body}"))
    again = load_text(specs_to_yaml(manifest.services))
    assert again.services == manifest.services
