"""The pure part of the real Controller: a task as the runtime's ContainerConfig."""

from __future__ import annotations

from orch.agent.containers import container_config, hostname_of
from orch.proto import objects_pb2


def task(slot: int, hostname: str = "") -> objects_pb2.Task:
    t = objects_pb2.Task(id="t1", service_name="web", slot=slot)
    t.container.image = "127.0.0.1:5055/busybox:latest"
    t.container.hostname = hostname
    t.resources.limits.memory_bytes = 32 << 20
    return t


def test_hostname_is_service_and_slot_or_node_for_global_tasks() -> None:
    assert hostname_of(task(3), "node1") == "web-3"
    assert hostname_of(task(0), "node2.example.org") == "web-node2"  # global: one per node
    assert hostname_of(task(3, hostname="db"), "node1") == "db"


def test_config_names_the_task_in_env_labels_and_limits() -> None:
    config = container_config(task(2), node_name="node1", netns_path=None, mounts=[])
    assert config.id == "t1" and config.hostname == "web-2"
    assert {"ORCH_TASK_ID=t1", "ORCH_SERVICE=web", "ORCH_SLOT=2", "ORCH_NODE=node1"} <= set(
        config.env
    )
    assert config.labels["orch.slot"] == "2"
    assert config.limits.memory_bytes == 32 << 20
