"""The shared vocabulary (orch.model) that manager, agent, manifests and overlay rely on:
readiness, the built-in networks, a task's networks and the MAC of an address."""

from __future__ import annotations

import pytest

from orch import model
from orch.proto import objects_pb2, specs_pb2
from orch.proto import types_pb2 as T


def task(
    *networks: str,
    state: int = T.RUNNING,
    health: int = T.HEALTH_UNSPECIFIED,
    checked: bool = False,
) -> objects_pb2.Task:
    t = objects_pb2.Task(id="t1")
    t.status.state = state
    t.status.health = health
    for name in networks:
        t.networks.add(target=name)
    if checked:
        t.container.healthcheck.exec.command.append("true")
    return t


@pytest.mark.parametrize(
    ("health", "ready"),
    [
        (T.HEALTH_UNSPECIFIED, True),
        (T.HEALTH_NONE, True),
        (T.HEALTH_HEALTHY, True),
        (T.HEALTH_STARTING, False),
        (T.HEALTH_UNHEALTHY, False),
    ],
)
def test_an_unchecked_running_task_is_ready_unless_it_reports_ill_health(
    health: int, ready: bool
) -> None:
    assert model.is_ready(task(health=health)) is ready


@pytest.mark.parametrize(
    ("health", "ready"),
    [
        (T.HEALTH_UNSPECIFIED, False),  # no result yet: not known to serve
        (T.HEALTH_STARTING, False),
        (T.HEALTH_HEALTHY, True),
        (T.HEALTH_UNHEALTHY, False),
    ],
)
def test_a_checked_task_is_ready_only_when_healthy(health: int, ready: bool) -> None:
    assert model.is_ready(task(health=health, checked=True)) is ready


@pytest.mark.parametrize("state", [T.STARTING, T.COMPLETE, T.FAILED, T.ORPHANED])
def test_only_running_tasks_are_ready(state: int) -> None:
    assert not model.is_ready(task(state=state, health=T.HEALTH_HEALTHY))


def test_a_task_naming_no_network_is_on_the_bridge() -> None:
    assert model.networks_of(task()) == [model.BRIDGE]
    assert model.networks_of(task("front", "bridge")) == ["front", "bridge"]
    assert model.networks_of(task(model.HOST)) == ["host"]


def test_cluster_networks_are_the_declared_ones_not_built_in_in_order() -> None:
    assert model.cluster_networks(task()) == []
    assert model.cluster_networks(task("back", "bridge", "front")) == ["back", "front"]
    spec = specs_pb2.ServiceSpec(name="web")
    spec.networks.add(target="front")
    spec.networks.add(target="none")
    assert model.cluster_networks(spec) == ["front"]


def test_the_built_in_networks() -> None:
    assert model.BUILTIN_NETWORKS == ("bridge", "host", "none")


@pytest.mark.parametrize(
    ("address", "mac"),
    [
        ("10.10.0.5", "02:42:0a:0a:00:05"),
        ("192.168.255.1", "02:42:c0:a8:ff:01"),
        ("10.213.0.2/24", "02:42:0a:d5:00:02"),
        ("172.17.0.255", "02:42:ac:11:00:ff"),
    ],
)
def test_the_mac_follows_the_address_like_docker(address: str, mac: str) -> None:
    assert model.mac_for(address) == mac


@pytest.mark.parametrize(
    ("desired", "state", "current"),
    [
        (T.RUNNING, T.RUNNING, True),
        (T.RUNNING, T.FAILED, True),  # its slot's task until replaced
        (T.SHUTDOWN, T.RUNNING, True),  # still stopping
        (T.SHUTDOWN, T.SHUTDOWN, False),
        (T.SHUTDOWN, T.FAILED, False),
    ],
)
def test_current_tasks_are_desired_running_or_not_yet_ended(
    desired: int, state: int, current: bool
) -> None:
    t = task(state=state)
    t.desired_state = desired
    assert model.is_current(t) is current


def test_unset_timestamps_read_as_none_and_creation_as_the_epoch() -> None:
    t = task()
    assert model.time_of(t.status, "started_at") is None
    assert model.created_at(t) == model.EPOCH
    t.meta.created_at.CopyFrom(model.timestamp(model.EPOCH.replace(year=2026)))
    assert model.created_at(t) == model.EPOCH.replace(year=2026)
