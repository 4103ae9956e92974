"""The loader: YAML to specs, and every problem of every file with file:line at once."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from manifest_helpers import load, problems_of, service

from orch.errors import NotFoundError, ValidationError
from orch.manifests.loader import load_paths, load_text
from orch.manifests.validate import validate_service_spec
from orch.proto import specs_pb2, types_pb2

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
MI = 2**20


def test_example_web_manifest_loads() -> None:
    manifest = load_paths([EXAMPLES / "web.yaml"])
    [web] = manifest.services
    assert web.name == "web" and web.replicas == 3
    assert web.container.image == "127.0.0.1:5055/busybox:latest"
    assert web.container.command[:2] == ["sh", "-c"]
    assert "exec httpd -f -p 80 -h /www" in web.container.command[2]
    assert "$ORCH_SERVICE.$ORCH_SLOT task $ORCH_TASK_ID on $ORCH_NODE" in web.container.command[2]
    assert web.restart_policy.condition == types_pb2.RESTART_ON_FAILURE
    assert 0 < web.resources.reservations.memory_bytes <= web.resources.limits.memory_bytes
    assert manifest.origin("Service", "web").endswith("web.yaml:5")


def test_example_app_manifest_loads_and_validates() -> None:
    manifest = load_paths([EXAMPLES / "app.yaml"])
    assert [n.name for n in manifest.networks] == ["front"]
    api, client = manifest.services
    assert api.container.healthcheck.http.path == "/index.html"
    assert api.update.order and api.placement.preferences[0].spread == "node.labels.zone"
    assert [n.target for n in client.networks] == ["front"]
    for spec in manifest.services:
        assert validate_service_spec(spec) == []


def test_every_service_field_converts() -> None:
    text = service(
        """
        image: oci:/var/lib/images/busybox:latest
        command: sh -c 'echo "hi there"'
        args: [-p, 80, 1.10]
        env: {A: 1, B: "two", C: 0800}
        workdir: /www
        hostname: web.local
        user: 1000:1000
        replicas: 0
        resources:
          limits: {cpus: 1.5, memory: 64Mi, pids: 100}
          reservations: {cpus: 500m, memory: 1M}
        restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 2m, max_delay: 1m30s}
        networks: [front, {name: back, aliases: [db, db.internal]}]
        stop_grace_period: 1.5
        stop_signal: term
        labels: {com.example/team: core}
        """
    )
    [spec] = load(text).services
    c = spec.container
    assert c.image == "oci:/var/lib/images/busybox:latest"
    assert list(c.command) == ["sh", "-c", 'echo "hi there"']
    assert list(c.args) == ["-p", "80", "1.10"]  # numbers as written
    assert list(c.env) == ["A=1", "B=two", "C=0800"]
    assert (c.workdir, c.hostname, c.user) == ("/www", "web.local", "1000:1000")
    assert spec.replicas == 0
    assert spec.resources.limits == types_pb2.Resources(
        nano_cpus=1_500_000_000, memory_bytes=64 * MI, pids=100
    )
    assert spec.resources.reservations == types_pb2.Resources(
        nano_cpus=500_000_000, memory_bytes=1_000_000
    )
    policy = spec.restart_policy
    assert policy.condition == types_pb2.RESTART_ON_FAILURE
    assert policy.delay.seconds == 5 and policy.max_attempts == 3
    assert policy.window.seconds == 120 and policy.max_delay.seconds == 90
    assert [(n.target, list(n.aliases)) for n in spec.networks] == [
        ("front", []),
        ("back", ["db", "db.internal"]),
    ]
    assert c.stop_grace_period.ToMilliseconds() == 1500
    assert c.stop_signal == "SIGTERM"
    assert dict(c.labels) == {"com.example/team": "core"}


def test_defaults_and_empty_collections() -> None:
    text = service(
        """
        image: busybox
        env:
        networks:
        resources: {limits: {}}
        """
    )
    [spec] = load(text).services
    assert spec.replicas == 1
    assert not spec.HasField("resources") and not spec.HasField("restart_policy")
    assert list(spec.networks) == [] and list(spec.container.env) == []
    assert not spec.container.HasField("stop_grace_period")


def test_env_as_a_list_and_a_network_document() -> None:
    text = service("image: busybox\nenv: [A=1, B=x=y]\n") + (
        "---\napiVersion: orch/v1\nkind: Network\nmetadata: {name: front, labels: {a: b}}\n"
        "spec: {subnet: 10.10.0.0/24}\n---\n"
        "apiVersion: orch/v1\nkind: Network\nmetadata: {name: back}\n"
    )
    manifest = load(text)
    assert list(manifest.services[0].container.env) == ["A=1", "B=x=y"]
    assert manifest.networks == [
        specs_pb2.NetworkSpec(
            name="front", driver="overlay", subnet="10.10.0.0/24", labels={"a": "b"}
        ),
        specs_pb2.NetworkSpec(name="back", driver="overlay"),
    ]
    assert manifest.origin("network", "back") == "t.yaml:14"
    with pytest.raises(NotFoundError):
        manifest.origin("Service", "nope")


def test_replicas_minus_one() -> None:
    assert problems_of(service("image: busybox\nreplicas: -1\n"), "web.yaml") == [
        "web.yaml:7: spec.replicas: expected an integer >= 0, got -1"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('replicas: "3"', "spec.replicas: expected an integer >= 0, got '3' (a string)"),
        ("replicas: true", "spec.replicas: expected an integer >= 0, got true (a boolean)"),
        ("replicas: 1.5", "spec.replicas: expected an integer >= 0, got 1.5"),
        ("replicas: [1]", "spec.replicas: expected an integer >= 0, got a list"),
        ("replicas: 99999999999999999999999", "spec.replicas: expected an integer <= "),
        ("labels: [a, b]", "spec.labels: expected a mapping of label keys to strings, got a list"),
        ("resources: [a]", "spec.resources: expected a mapping, got a list"),
        ("command: {a: b}", "spec.command: expected a list of strings, or a string split"),
        ("env: {A: yes}", "spec.env.A: expected a string, got true (a boolean); quote it: 'yes'"),
        ("env: {A: }", "spec.env.A: expected a string, got null"),
        (
            "env: {A=B: x}",
            "spec.env[\"A=B\"]: invalid variable name 'A=B' (accepted: a name without '=')",
        ),
        ("hostname: 5", "spec.hostname: expected a string, got 5"),
        ("stop_signal: 99", "spec.stop_signal: unknown signal number 99"),
        ('command: "sh -c \'oops"', 'spec.command: cannot split "sh -c \'oops" like a shell'),
        (
            "restart_policy: {condition: sometimes}",
            "spec.restart_policy.condition: unknown condition",
        ),
        (
            "restart_policy: {max_attempts: -2}",
            "spec.restart_policy.max_attempts: expected an integer >= 0",
        ),
        ("networks: [{aliases: [x]}]", "spec.networks[0].name: required field missing"),
        ("networks: [7]", "spec.networks[0]: expected a string, got 7"),
        (
            "resources: {limits: {memory: 512m}}",
            "spec.resources.limits.memory: ambiguous unit in '512m'",
        ),
        (
            "resources: {limits: {memory: lots}}",
            "spec.resources.limits.memory: invalid size 'lots'",
        ),
        (
            "resources: {limits: {cpus: half}}",
            "spec.resources.limits.cpus: invalid CPU amount 'half'",
        ),
        ("resources: {reservations: {pids: 5}}", "spec.resources.reservations.pids: unknown field"),
        ("stop_grace_period: 10 seconds", "spec.stop_grace_period: invalid duration '10 seconds'"),
        ("restart_policy: {delay: -1}", "spec.restart_policy.delay: expected a duration >= 0"),
    ],
)
def test_wrong_values_name_line_and_field(line: str, expected: str) -> None:
    problems = problems_of(service(f"image: busybox\n{line}\n"))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"t.yaml:7: {expected}"), problems


def test_unknown_fields_suggest_the_right_one() -> None:
    text = (
        "apiVersion: orch/v1\nkind: Service\nimage: busybox\nmetadata: {name: web, lables: {}}\n"
        "spec:\n  image: busybox\n  replcias: 2\n  environment: {A: b}\n  resources:\n"
        "    limits: {CPUs: 1}\n  zzz: 1\n"
    )
    accepted = "(accepted: image, command, args, env, workdir, hostname, user, replicas, "
    problems = problems_of(text)
    assert problems[0] == (
        "t.yaml:3: image: unknown field; did you mean 'spec.image'? "
        "(accepted: apiVersion, kind, metadata, spec)"
    )
    assert problems[1] == (
        "t.yaml:4: metadata.lables: unknown field; did you mean 'metadata.labels'? "
        "(accepted: name, labels)"
    )
    assert problems[2].startswith(
        f"t.yaml:7: spec.replcias: unknown field; did you mean 'spec.replicas'? {accepted}"
    )
    assert problems[3].startswith(
        "t.yaml:8: spec.environment: unknown field; did you mean 'spec.env'?"
    )
    assert problems[4].startswith(
        "t.yaml:10: spec.resources.limits.CPUs: unknown field; did you mean 'spec.resources.limits.cpus'?"
    )
    assert problems[5].startswith(f"t.yaml:11: spec.zzz: unknown field {accepted}")
    assert len(problems) == 6


def test_missing_image_points_at_spec() -> None:
    assert problems_of(service("replicas: 2\n"), "web.yaml") == [
        "web.yaml:5: spec.image: required: the image to run "
        "(accepted: host[:port]/name[:tag][@digest] or oci:/absolute/path[:tag])"
    ]


def test_header_problems() -> None:
    text = (
        "kind: Service\nmetadata: {name: a}\nspec: {image: busybox}\n---\n"
        "apiVersion: orch/v2\nkind: service\n---\n"
        "apiVersion: orch/v1\nmetadata: {name: c}\n---\n"
        "- just\n- a list\n---\n"
        "apiVersion: orch/v1\nkind: Service\n"
    )
    assert problems_of(text) == [
        "t.yaml:1: apiVersion: required field missing (accepted: orch/v1)",
        "t.yaml:5: apiVersion: unsupported apiVersion 'orch/v2' (accepted: orch/v1)",
        "t.yaml:6: kind: unknown kind 'service'; did you mean 'Service'? (accepted: Service, Network)",
        "t.yaml:8: kind: required field missing (accepted: Service, Network)",
        "t.yaml:11: (document): expected a mapping with apiVersion, kind, metadata and spec, got a list",
        "t.yaml:14: metadata.name: required (accepted: a DNS label: lowercase letters, digits and '-', "
        "starting and ending with a letter or digit, at most 63 characters)",
        "t.yaml:14: spec.image: required: the image to run "
        "(accepted: host[:port]/name[:tag][@digest] or oci:/absolute/path[:tag])",
    ]


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = service("image: busybox\nenv: {A: 1\nreplicas: 2\n")
    [problem] = problems_of(text, "web.yaml")
    assert problem.startswith("web.yaml:8:11: YAML syntax error: ")


def test_value_rules_come_from_validate_with_lines() -> None:
    text = service(
        """
        image: busybox
        networks:
          - front
          - host
        resources:
          limits: {memory: 64Mi}
          reservations:
            memory: 128Mi
        env:
          A: x
          ORCH_SLOT: "1"
        """
    )
    assert [p.split(" (accepted")[0] for p in problems_of(text)] == [
        "t.yaml:9: spec.networks[1]: 'host' replaces the container's network, so it must be the only one",
        "t.yaml:13: spec.resources.reservations.memory: reservation of 128Mi exceeds the limit of 64Mi",
        "t.yaml:16: spec.env[1]: ORCH_SLOT: ORCH_* variables are set by the agent",
    ]


def test_a_field_reported_by_the_decoder_is_not_reported_again() -> None:
    # metadata.name is not a string: the decoder says so; validate's "required" is dropped.
    problems = problems_of(
        "apiVersion: orch/v1\nkind: Service\nmetadata: {name: 5}\nspec: {image: x}\n"
    )
    assert problems == ["t.yaml:3: metadata.name: expected a string, got 5"]


def test_one_bad_document_fails_the_whole_file() -> None:
    text = (
        service("image: busybox\n") + "\n---\n" + service("image: busybox\nreplicas: -1\n", "api")
    )
    with pytest.raises(ValidationError) as caught:
        load_text(text, "multi.yaml")
    assert caught.value.problems == [
        "multi.yaml:15: spec.replicas: expected an integer >= 0, got -1"
    ]


def test_duplicate_names_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service("image: busybox\n"))
    (tmp_path / "b.yml").write_text(
        "apiVersion: orch/v1\nkind: Network\nmetadata: {name: web}\n---\n" + service("image: x\n")
    )
    with pytest.raises(ValidationError) as caught:
        load_paths([tmp_path])
    assert caught.value.problems == [
        f"{tmp_path}/b.yml:8: metadata.name: duplicate Service name 'web' (also defined at {tmp_path}/a.yaml:4)"
    ]


def test_directory_loads_yaml_and_yml_sorted_and_skips_others(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(service("image: busybox\n", "second"))
    (tmp_path / "a.yaml").write_text(service("image: busybox\n", "first"))
    (tmp_path / "c.txt").write_text("not: yaml: at all: [")
    (tmp_path / ".hidden.yaml").write_text("garbage: [")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text("garbage: [")
    manifest = load_paths([tmp_path, tmp_path / "a.yaml"])  # a file named twice loads once
    assert [s.name for s in manifest.services] == ["first", "second"]
    assert manifest.origin("Service", "second") == f"{tmp_path}/b.yml:1"


def test_problems_of_all_files_and_missing_paths_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service("image: busybox\nreplicas: x\n"))
    (tmp_path / "b.yaml").write_text(service("image: busybox\nreplicas: -1\n", "b"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ValidationError) as caught:
        load_paths(
            [
                tmp_path / "a.yaml",
                tmp_path / "nope.yaml",
                tmp_path / "b.yaml",
                tmp_path / "empty",
                tmp_path / "latin1.yaml",
            ]
        )
    assert caught.value.problems == [
        f"{tmp_path}/nope.yaml: no such file or directory",
        f"{tmp_path}/empty: no *.yaml or *.yml files in this directory",
        f"{tmp_path}/a.yaml:7: spec.replicas: expected an integer >= 0, got 'x' (a string)",
        f"{tmp_path}/b.yaml:7: spec.replicas: expected an integer >= 0, got -1",
        f"{tmp_path}/latin1.yaml: not UTF-8 text",
    ]


def test_nothing_to_apply_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing here\n---\n")
    with pytest.raises(ValidationError) as caught:
        load_paths([tmp_path / "empty.yaml"])
    assert caught.value.problems == [f"no manifests found in {tmp_path}/empty.yaml"]
    assert load_text("", "x.yaml").services == []


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(service("image: busybox\n")))
    manifest = load_paths(["-"])
    assert manifest.origin("Service", "web") == "<stdin>:1"


def test_overlapping_subnets_across_documents() -> None:
    text = (
        "apiVersion: orch/v1\nkind: Network\nmetadata: {name: a}\nspec: {subnet: 10.1.0.0/16}\n---\n"
        "apiVersion: orch/v1\nkind: Network\nmetadata: {name: b}\nspec: {subnet: 10.1.2.0/24}\n"
    )
    assert problems_of(text) == [
        "t.yaml:9: spec.subnet: 10.1.2.0/24 overlaps network 'a' (10.1.0.0/16 at t.yaml:4)"
    ]
