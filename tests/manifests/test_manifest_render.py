"""render: specs back to manifests, in human units, and back again unchanged."""

from __future__ import annotations

from pathlib import Path

import yaml
from manifest_helpers import service

from orch.manifests.loader import load_paths, load_text
from orch.manifests.render import spec_to_manifest, specs_to_yaml
from orch.proto import specs_pb2

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def test_render_example_in_human_units() -> None:
    [web] = load_paths([EXAMPLES / "web.yaml"]).services
    document = spec_to_manifest(web)
    assert list(document) == ["apiVersion", "kind", "metadata", "spec"]
    assert document["metadata"] == {"name": "web", "labels": {"tier": "front"}}
    spec = document["spec"]
    assert spec["resources"] == {
        "limits": {"cpus": 0.25, "memory": "32Mi", "pids": 64},
        "reservations": {"cpus": 0.05, "memory": "8Mi"},
    }
    assert spec["restart_policy"] == {
        "condition": "on-failure",
        "delay": "2s",
        "max_attempts": 5,
        "window": "2m",
        "max_delay": "30s",
    }
    assert spec["networks"] == ["bridge"] and spec["stop_grace_period"] == "5s"


def test_round_trip_of_every_field() -> None:
    text = service(
        """
        image: 127.0.0.1:5000/busybox:latest
        command: [sh, -c, "echo hi"]
        args: ["-x", "yes"]
        env: {A: "1", B: "no", EMPTY: ""}
        workdir: /www
        hostname: web
        user: "1000:1000"
        replicas: 0
        resources:
          limits: {cpus: 0.015, memory: 5000001, pids: 7}
          reservations: {cpus: 0.001, memory: 1M}
        restart_policy: {condition: none, delay: 0s, window: 1h1m1.5s}
        networks: [front, {name: back, aliases: [db]}]
        stop_grace_period: 250ms
        stop_signal: SIGINT
        labels: {"a.b/c": "true"}
        """
    )
    [spec] = load_text(text).services
    rendered = spec_to_manifest(spec)
    assert rendered["spec"]["replicas"] == 0  # zero replicas is said, not omitted
    assert rendered["spec"]["restart_policy"]["delay"] == "0s"  # so is a zero duration
    assert rendered["spec"]["resources"]["limits"]["memory"] == 5000001
    assert rendered["spec"]["env"] == {"A": "1", "B": "no", "EMPTY": ""}
    [again] = load_text(yaml.safe_dump(rendered, sort_keys=False)).services
    assert again == spec


def test_defaults_are_omitted_and_env_with_duplicates_stays_a_list() -> None:
    spec = specs_pb2.ServiceSpec(name="x", replicas=1)
    spec.container.image = "busybox"
    spec.container.env.extend(["A=1", "A=2"])
    spec.resources.SetInParent()  # empty sub-messages from another client render as nothing
    assert spec_to_manifest(spec) == {
        "apiVersion": "orch/v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"image": "busybox", "env": ["A=1", "A=2"], "replicas": 1},
    }


def test_networks_and_multi_document_yaml() -> None:
    net = specs_pb2.NetworkSpec(name="front", driver="overlay", subnet="10.9.0.0/24")
    svc = specs_pb2.ServiceSpec(name="web", replicas=2)
    svc.container.image = "busybox"
    svc.networks.add(target="front")
    text = specs_to_yaml([net, svc])
    manifest = load_text(text)
    assert manifest.networks == [net] and manifest.services == [svc]
    assert spec_to_manifest(net)["spec"] == {"driver": "overlay", "subnet": "10.9.0.0/24"}
