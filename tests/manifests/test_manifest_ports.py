"""Published ports: the manifest forms, the value rules (shared with the manager) and the
check across services of one apply."""

from __future__ import annotations

import pytest
from manifest_helpers import load, problems_of, service

from orch.manifests.render import spec_to_manifest
from orch.manifests.validate import port_clashes, validate_service_spec
from orch.proto import specs_pb2


def ports_of(text: str) -> list[tuple[int, int, str, str]]:
    [spec] = load(text).services
    return [(p.published, p.target, p.protocol, p.mode) for p in spec.ports]


def test_long_and_short_forms_with_defaults() -> None:
    text = service(
        """
        image: busybox
        ports:
          - {target: 80, published: 8080}
          - {target: 53, published: 5353, protocol: udp, mode: host}
          - "8443:443"
          - "5354:53/udp"
          - 9090:90
        """
    )
    assert ports_of(text) == [
        (8080, 80, "tcp", "host"),
        (5353, 53, "udp", "host"),
        (8443, 443, "tcp", "host"),
        (5354, 53, "udp", "host"),
        (9090, 90, "tcp", "host"),
    ]


def test_unquoted_short_form_that_yaml_reads_as_base_60_keeps_its_text() -> None:
    # YAML 1.1 reads 8080:30 as 8080 * 60 + 30; the port is what was written.
    assert ports_of(service("image: busybox\nports: [8080:30]")) == [(8080, 30, "tcp", "host")]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ('"80"', "spec.ports[0]: '80' names only the container's port; give the node's port too"),
        ('"8080-80"', "spec.ports[0]: invalid port '8080-80' (accepted: PUBLISHED:TARGET"),
        ("{published: 8080}", "spec.ports[0].target: required field missing"),
        ("{target: 80}", "spec.ports[0].published: required: the port on the node"),
        ("{target: 80, published: 70000}", "spec.ports[0].published: expected a port 1-65535"),
        ("{target: 0, published: 80}", "spec.ports[0].target: expected a port 1-65535, got 0"),
        ('"8080:80/sctp"', "spec.ports[0].protocol: unknown protocol 'sctp' (accepted: tcp, udp)"),
        (
            "{target: 80, published: 80, mode: ingress}",
            "spec.ports[0].mode: mode ingress (the port on every node, a routing mesh) is not "
            "built yet (accepted: host)",
        ),
        ("{target: 80, published: 80, mode: vip}", "spec.ports[0].mode: unknown mode 'vip'"),
    ],
)
def test_bad_ports_name_the_field_and_line(item: str, expected: str) -> None:
    problems = problems_of(service(f"image: busybox\nports:\n  - {item}"))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"t.yaml:8: {expected}"), problems


def test_the_same_published_port_twice_in_one_service() -> None:
    problems = problems_of(service('image: busybox\nports: ["8080:80", "8081:80", "8080:81"]'))
    assert problems == [
        "t.yaml:7: spec.ports[2]: published port 8080/tcp is given twice (also spec.ports[0])"
    ]


def test_same_port_other_protocol_is_fine() -> None:
    assert len(ports_of(service('image: busybox\nports: ["53:53", "53:53/udp"]'))) == 2


def test_the_same_published_port_in_two_services_names_both() -> None:
    text = (
        service('image: busybox\nports: ["8080:80"]', name="web")
        + "\n---\n"
        + service('image: busybox\nports: ["9000:90", "8080:8080"]', name="api")
    )
    assert problems_of(text) == [
        "t.yaml:15: spec.ports[1]: published port 8080/tcp is also published by service "
        "'web' (at t.yaml:7)"
    ]


@pytest.mark.parametrize("mode", ["none", "host"])
def test_ports_need_a_network_with_its_own_address(mode: str) -> None:
    problems = problems_of(service(f'image: busybox\nnetworks: [{mode}]\nports: ["80:80"]'))
    assert problems == [
        f"t.yaml:8: spec.ports: published ports need a network on which the container has "
        f"its own address; network mode {mode!r} has none (accepted: bridge (the default) or "
        "an overlay network)"
    ]


def test_render_uses_the_short_form_and_round_trips() -> None:
    text = service('image: busybox\nports: ["8080:80", "53:53/udp"]')
    [spec] = load(text).services
    assert spec_to_manifest(spec)["spec"]["ports"] == ["8080:80", "53:53/udp"]


def test_manager_side_rules_without_yaml() -> None:
    spec = specs_pb2.ServiceSpec(name="web")
    spec.container.image = "busybox"
    spec.ports.add(target=80, published=8080)  # protocol and mode left to their defaults
    assert validate_service_spec(spec) == []
    other = specs_pb2.ServiceSpec(name="api")
    other.ports.add(target=81, published=8080, protocol="tcp")
    other.ports.add(target=81, published=8080, protocol="udp")
    assert port_clashes([spec, other]) == [(1, 0, (8080, "tcp"))]
