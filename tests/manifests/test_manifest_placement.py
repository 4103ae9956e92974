"""spec.mode and spec.placement in manifests: what loads, how it renders back, and the
file:line problems of bad constraints, spread keys and settings a global service cannot
use. The protobuf rules are the ones the Control API runs (validate_service_spec)."""

from __future__ import annotations

from manifest_helpers import load, problems_of, service

from orch.manifests.render import specs_to_yaml
from orch.manifests.validate import validate_service_spec
from orch.proto import specs_pb2

ACCEPTED = (
    "(accepted: ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, where ATTRIBUTE is one of node.id, "
    "node.hostname, node.labels.KEY, engine.labels.KEY, node.platform.os, node.platform.arch)"
)


def test_placement_and_mode_load_and_render_back() -> None:
    web_doc = service(
        """
        image: reg/busybox:latest
        replicas: 4
        placement:
          constraints: ["node.labels.zone != c", node.hostname==host1]
          preferences:
            - spread: node.labels.zone
          max_replicas_per_node: 2
        """
    )
    agent_doc = service(
        """
        image: reg/busybox:latest
        mode: global
        placement: {constraints: [node.labels.edge==true]}
        """,
        name="agent",
    )
    text = web_doc + "\n---\n" + agent_doc
    web, agent = load(text).services
    assert list(web.placement.constraints) == ["node.labels.zone != c", "node.hostname==host1"]
    assert [p.spread for p in web.placement.preferences] == ["node.labels.zone"]
    assert web.placement.max_replicas_per_node == 2
    assert web.mode == specs_pb2.REPLICATED
    assert agent.mode == specs_pb2.GLOBAL
    rendered = specs_to_yaml([web, agent])
    assert "mode: global" in rendered and rendered.count("mode:") == 1
    assert load(rendered).services == [web, agent]


def test_mode_replicated_is_the_default_spelling() -> None:
    (spec,) = load(service("image: reg/busybox:latest\nmode: Replicated\n")).services
    assert spec == load(service("image: reg/busybox:latest\n")).services[0]


def test_bad_constraints_are_reported_at_their_lines() -> None:
    problems = problems_of(
        service(
            """
            image: reg/busybox:latest
            placement:
              constraints:
                - node.labels.zone==a
                - node.labels.zone=c
                - node.foo==x
                - zone==a
            """
        )
    )
    assert problems == [
        "t.yaml:10: spec.placement.constraints[1]: expected '==' or '!=' in "
        f"'node.labels.zone=c'; did you mean 'node.labels.zone==c'? {ACCEPTED}",
        f"t.yaml:11: spec.placement.constraints[2]: unknown attribute 'node.foo' {ACCEPTED}",
        "t.yaml:12: spec.placement.constraints[3]: unknown attribute 'zone'; did you mean "
        f"'node.labels.zone'? {ACCEPTED}",
    ]


def test_bad_preferences() -> None:
    assert problems_of(
        service(
            """
            image: reg/busybox:latest
            placement:
              preferences:
                - spread: zone
            """
        )
    ) == [
        "t.yaml:9: spec.placement.preferences[0].spread: unknown attribute 'zone'; did you "
        "mean 'node.labels.zone'? (accepted: a node attribute, e.g. node.labels.zone (one of "
        "node.id, node.hostname, node.labels.KEY, engine.labels.KEY, node.platform.os, "
        "node.platform.arch))"
    ]
    assert problems_of(
        service(
            """
            image: reg/busybox:latest
            placement:
              preferences:
                - {}
                - node.labels.zone
                - pack: node.labels.zone
              max_replicas: 1
            """
        )
    ) == [
        "t.yaml:9: spec.placement.preferences[0].spread: required field missing "
        "(accepted: a string)",
        "t.yaml:10: spec.placement.preferences[1]: expected a mapping with spread, got "
        "'node.labels.zone' (a string)",
        "t.yaml:11: spec.placement.preferences[2].pack: unknown field (accepted: spread)",
        "t.yaml:11: spec.placement.preferences[2].spread: required field missing "
        "(accepted: a string)",
        "t.yaml:12: spec.placement.max_replicas: unknown field; did you mean "
        "'spec.placement.max_replicas_per_node'? "
        "(accepted: constraints, preferences, max_replicas_per_node)",
    ]


def test_unknown_mode_and_settings_a_global_service_cannot_use() -> None:
    assert problems_of(service("image: reg/busybox:latest\nmode: daemonset\n")) == [
        "t.yaml:7: spec.mode: unknown mode 'daemonset' (accepted: replicated, global)"
    ]
    problems = problems_of(
        service(
            """
            image: reg/busybox:latest
            mode: global
            replicas: 3
            placement:
              preferences: [{spread: node.labels.zone}]
              max_replicas_per_node: 1
            """
        )
    )
    per_node = "a global service runs one task on every eligible node"
    assert problems == [
        f"t.yaml:8: spec.replicas: replicas (3) does not apply to a global service; {per_node}"
        " (accepted: leave replicas out, or mode: replicated)",
        "t.yaml:10: spec.placement.preferences: spread preferences do not apply to a global "
        f"service; {per_node} (accepted: constraints choose its nodes)",
        "t.yaml:11: spec.placement.max_replicas_per_node: max_replicas_per_node does not "
        f"apply to a global service; {per_node} (accepted: leave it out, or mode: replicated)",
    ]


def test_the_control_api_rules_on_protobuf_specs() -> None:
    spec = specs_pb2.ServiceSpec(name="web", replicas=1, mode=7)
    spec.container.image = "reg/busybox:latest"
    spec.placement.constraints.append("node.labels.zone=~a")
    spec.placement.preferences.add(spread="")
    assert validate_service_spec(spec) == [
        "spec.placement.constraints[0]: unsupported operator '=~' in 'node.labels.zone=~a' "
        + ACCEPTED,
        "spec.placement.preferences[0].spread: required: the node attribute to spread over "
        "(accepted: a node attribute, e.g. node.labels.zone (one of node.id, node.hostname, "
        "node.labels.KEY, engine.labels.KEY, node.platform.os, node.platform.arch))",
        "spec.mode: unknown mode 7 (accepted: replicated, global)",
    ]
