import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from orch.proto import objects_pb2 as _objects_pb2
from orch.proto import specs_pb2 as _specs_pb2
from orch.proto import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("networks", "services", "dry_run")
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedCompositeFieldContainer[_specs_pb2.NetworkSpec]
    services: _containers.RepeatedCompositeFieldContainer[_specs_pb2.ServiceSpec]
    dry_run: bool
    def __init__(self, networks: _Optional[_Iterable[_Union[_specs_pb2.NetworkSpec, _Mapping]]] = ..., services: _Optional[_Iterable[_Union[_specs_pb2.ServiceSpec, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("kind", "name", "action", "fields")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    action: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., action: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("changes", "planned_tasks", "plan_note")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    PLANNED_TASKS_FIELD_NUMBER: _ClassVar[int]
    PLAN_NOTE_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    planned_tasks: _containers.RepeatedCompositeFieldContainer[PlannedTask]
    plan_note: str
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., planned_tasks: _Optional[_Iterable[_Union[PlannedTask, _Mapping]]] = ..., plan_note: _Optional[str] = ...) -> None: ...

class PlannedTask(_message.Message):
    __slots__ = ("service", "slot", "node", "action", "reason", "task_id")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    service: str
    slot: int
    node: str
    action: str
    reason: str
    task_id: str
    def __init__(self, service: _Optional[str] = ..., slot: _Optional[int] = ..., node: _Optional[str] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class ScaleRequest(_message.Message):
    __slots__ = ("replicas",)
    class ReplicasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.ScalarMap[str, int]
    def __init__(self, replicas: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ScaleResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ...) -> None: ...

class ListServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceInfo(_message.Message):
    __slots__ = ("service", "replicas_running", "rollout")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    service: _objects_pb2.Service
    replicas_running: int
    rollout: RolloutProgress
    def __init__(self, service: _Optional[_Union[_objects_pb2.Service, _Mapping]] = ..., replicas_running: _Optional[int] = ..., rollout: _Optional[_Union[RolloutProgress, _Mapping]] = ...) -> None: ...

class RolloutProgress(_message.Message):
    __slots__ = ("total", "updated", "running", "healthy", "failed")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    total: int
    updated: int
    running: int
    healthy: int
    failed: int
    def __init__(self, total: _Optional[int] = ..., updated: _Optional[int] = ..., running: _Optional[int] = ..., healthy: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListServicesResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceInfo]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceInfo, _Mapping]]] = ...) -> None: ...

class GetServiceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveServiceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveServiceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("service", "include_history")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    service: str
    include_history: bool
    def __init__(self, service: _Optional[str] = ..., include_history: _Optional[bool] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_objects_pb2.Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[_objects_pb2.Task, _Mapping]]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_objects_pb2.Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_objects_pb2.Node, _Mapping]]] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListManagersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListManagersResponse(_message.Message):
    __slots__ = ("managers", "leader")
    MANAGERS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    managers: _containers.RepeatedCompositeFieldContainer[_objects_pb2.ManagerInfo]
    leader: str
    def __init__(self, managers: _Optional[_Iterable[_Union[_objects_pb2.ManagerInfo, _Mapping]]] = ..., leader: _Optional[str] = ...) -> None: ...

class ListNetworksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NetworkInfo(_message.Message):
    __slots__ = ("network", "services", "endpoints")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    network: _objects_pb2.Network
    services: _containers.RepeatedScalarFieldContainer[str]
    endpoints: int
    def __init__(self, network: _Optional[_Union[_objects_pb2.Network, _Mapping]] = ..., services: _Optional[_Iterable[str]] = ..., endpoints: _Optional[int] = ...) -> None: ...

class ListNetworksResponse(_message.Message):
    __slots__ = ("networks",)
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedCompositeFieldContainer[NetworkInfo]
    def __init__(self, networks: _Optional[_Iterable[_Union[NetworkInfo, _Mapping]]] = ...) -> None: ...

class GetNetworkRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveNetworkRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveNetworkResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateNodeRequest(_message.Message):
    __slots__ = ("id", "availability", "add_labels", "remove_labels")
    class AddLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    ADD_LABELS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_LABELS_FIELD_NUMBER: _ClassVar[int]
    id: str
    availability: _types_pb2.NodeAvailability
    add_labels: _containers.ScalarMap[str, str]
    remove_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., availability: _Optional[_Union[_types_pb2.NodeAvailability, str]] = ..., add_labels: _Optional[_Mapping[str, str]] = ..., remove_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveNodeRequest(_message.Message):
    __slots__ = ("id", "force")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    force: bool
    def __init__(self, id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class RemoveNodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("target", "follow", "tail", "task_ids")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    target: str
    follow: bool
    tail: int
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, target: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ..., task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("task_id", "service", "slot", "node_id", "timestamp", "stream", "line")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    service: str
    slot: int
    node_id: str
    timestamp: _timestamp_pb2.Timestamp
    stream: str
    line: bytes
    def __init__(self, task_id: _Optional[str] = ..., service: _Optional[str] = ..., slot: _Optional[int] = ..., node_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stream: _Optional[str] = ..., line: _Optional[bytes] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("target", "argv", "env", "task_id")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    target: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedScalarFieldContainer[str]
    task_id: str
    def __init__(self, target: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[str]] = ..., task_id: _Optional[str] = ...) -> None: ...

class ExecOutput(_message.Message):
    __slots__ = ("task_id", "node_id", "stream", "data", "exited", "exit_code")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    node_id: str
    stream: str
    data: bytes
    exited: bool
    exit_code: int
    def __init__(self, task_id: _Optional[str] = ..., node_id: _Optional[str] = ..., stream: _Optional[str] = ..., data: _Optional[bytes] = ..., exited: _Optional[bool] = ..., exit_code: _Optional[int] = ...) -> None: ...
