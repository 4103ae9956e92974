"""Bad input gets one clear error naming where and what, and changes nothing in etcd."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from tests_support import etcd_state

from orch.localcluster.cluster import free_port

pytestmark = pytest.mark.integration

GOOD = """apiVersion: orch/v1
kind: Service
metadata: {{name: good}}
spec:
  image: {registry}/busybox:latest
  replicas: 1
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  imagee: x\n", "spec.imagee: unknown field; did you mean 'spec.image'?"),
        ("  replicas: three\n", "spec.replicas: expected an integer"),
        ("  replicas: -1\n", "spec.replicas: expected an integer >= 0, got -1"),
        ("  replicas: [1\n", "YAML syntax error"),
    ],
    ids=["unknown-field", "wrong-type", "negative-replicas", "yaml-syntax"],
)
def test_bad_manifest_is_refused_and_nothing_is_written(
    orch, cluster, tmp_path: Path, body: str, expected: str
) -> None:
    good = GOOD.format(registry=cluster.record.registry)
    bad = (
        "apiVersion: orch/v1\nkind: Service\nmetadata: {name: bad}\nspec:\n"
        f"  image: {cluster.record.registry}/busybox:latest\n" + body
    )
    # A good document beside the bad one: the whole apply is refused.
    text = good + "---\n" + bad
    line = text.splitlines().index(body.rstrip("\n")) + 1
    path = tmp_path / "apply.yaml"
    path.write_text(text)
    before = etcd_state(cluster)
    res = orch("apply", "-f", str(path), check=False)
    assert res.returncode == 1
    # A YAML syntax error is found where the parser gave up; it names the line it began at.
    assert f"{path}:{line}" in res.stderr or f"at line {line}" in res.stderr, res.stderr
    assert res.stderr.startswith(f"orch: {path}:") and expected in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert etcd_state(cluster) == before


def test_missing_image_names_the_field(orch, cluster, tmp_path: Path) -> None:
    path = tmp_path / "noimage.yaml"
    path.write_text(
        "apiVersion: orch/v1\nkind: Service\nmetadata: {name: x}\nspec:\n  replicas: 2\n"
    )
    before = etcd_state(cluster)
    res = orch("apply", "-f", str(path), check=False)
    assert res.returncode == 1
    assert "spec.image" in res.stderr and "required" in res.stderr, res.stderr
    assert etcd_state(cluster) == before


def test_scale_of_a_missing_service(orch, cluster) -> None:
    before = etcd_state(cluster)
    res = orch("scale", "nosuch=3", check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == "orch: no such service: nosuch"
    assert etcd_state(cluster) == before


def test_manager_down_is_one_line(orch) -> None:
    dead = f"127.0.0.1:{free_port()}"
    res = orch("--manager", dead, "ls", check=False)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orch: cannot reach a manager at " + dead)


def refused(orch, cluster, *args: str) -> list[str]:
    """The lines (one per problem) `orch ARGS` fails with, checking that etcd did not
    change."""
    before = etcd_state(cluster)
    res = orch(*args, check=False)
    assert res.returncode == 1, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    assert etcd_state(cluster) == before
    return res.stderr.strip().splitlines()


def test_scale_beyond_the_replica_bound(orch, cluster) -> None:
    [line] = refused(orch, cluster, "scale", "web=18446744073709551615")
    assert line == "orch: replicas.web: expected at most 10000 replicas, got 18446744073709551615"


def test_publishing_a_reserved_host_port(orch, cluster, tmp_path: Path) -> None:
    path = tmp_path / "ssh.yaml"
    path.write_text(GOOD.format(registry=cluster.record.registry) + '  ports: ["22:80"]\n')
    [line] = refused(orch, cluster, "apply", "-f", str(path))
    assert line.startswith(
        "orch: services[0] (good): spec.ports[0].published: host port 22 is reserved"
    ), line


@pytest.mark.parametrize("what", ["node", "bridge"])
def test_a_subnet_over_a_node_address_or_the_bridge(
    orch, cluster, tmp_path: Path, what: str
) -> None:
    node = ipaddress.IPv4Address(cluster.record.agents[0]["address"])
    subnet = ipaddress.IPv4Network(f"{node}/24", strict=False) if what == "node" else None
    text = "10.213.0.0/24" if subnet is None else str(subnet)
    path = tmp_path / "net.yaml"
    path.write_text(
        f"apiVersion: orch/v1\nkind: Network\nmetadata: {{name: lan}}\nspec: {{subnet: {text}}}\n"
    )
    lines = refused(orch, cluster, "apply", "-f", str(path))
    # One line per overlap: a manager's address may be in the same subnet.
    expected = "the address of node" if what == "node" else "the agents' bridge subnet"
    assert lines[0].startswith(f"orch: networks[0] (lan): subnet {text} overlaps "), lines
    assert any(expected in line for line in lines), lines
