import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from orch.proto import control_pb2 as _control_pb2
from orch.proto import objects_pb2 as _objects_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Register(_message.Message):
    __slots__ = ("node_id", "description")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    description: _objects_pb2.NodeDescription
    def __init__(self, node_id: _Optional[str] = ..., description: _Optional[_Union[_objects_pb2.NodeDescription, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Leaving(_message.Message):
    __slots__ = ("restart_grace",)
    RESTART_GRACE_FIELD_NUMBER: _ClassVar[int]
    restart_grace: _duration_pb2.Duration
    def __init__(self, restart_grace: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TaskStatusUpdate(_message.Message):
    __slots__ = ("task_id", "status", "attachments")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: _objects_pb2.TaskStatus
    attachments: _containers.RepeatedCompositeFieldContainer[_objects_pb2.NetworkAttachment]
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[_objects_pb2.TaskStatus, _Mapping]] = ..., attachments: _Optional[_Iterable[_Union[_objects_pb2.NetworkAttachment, _Mapping]]] = ...) -> None: ...

class StatusBatch(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[TaskStatusUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[TaskStatusUpdate, _Mapping]]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "status", "leaving")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    status: StatusBatch
    leaving: Leaving
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., status: _Optional[_Union[StatusBatch, _Mapping]] = ..., leaving: _Optional[_Union[Leaving, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("node_id", "session_id", "manager_id", "heartbeat_period")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MANAGER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_PERIOD_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    session_id: str
    manager_id: str
    heartbeat_period: _duration_pb2.Duration
    def __init__(self, node_id: _Optional[str] = ..., session_id: _Optional[str] = ..., manager_id: _Optional[str] = ..., heartbeat_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("task_id", "address", "mac", "node_addr")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    NODE_ADDR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    address: str
    mac: str
    node_addr: str
    def __init__(self, task_id: _Optional[str] = ..., address: _Optional[str] = ..., mac: _Optional[str] = ..., node_addr: _Optional[str] = ...) -> None: ...

class NetworkPeers(_message.Message):
    __slots__ = ("network", "peers")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    network: _objects_pb2.Network
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, network: _Optional[_Union[_objects_pb2.Network, _Mapping]] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class DnsEndpoint(_message.Message):
    __slots__ = ("service", "slot", "task_id", "address", "answerable")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ANSWERABLE_FIELD_NUMBER: _ClassVar[int]
    service: str
    slot: int
    task_id: str
    address: str
    answerable: bool
    def __init__(self, service: _Optional[str] = ..., slot: _Optional[int] = ..., task_id: _Optional[str] = ..., address: _Optional[str] = ..., answerable: _Optional[bool] = ...) -> None: ...

class DnsRecords(_message.Message):
    __slots__ = ("network", "endpoints")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    network: str
    endpoints: _containers.RepeatedCompositeFieldContainer[DnsEndpoint]
    def __init__(self, network: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[DnsEndpoint, _Mapping]]] = ...) -> None: ...

class DnsNetworkNames(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class Assignments(_message.Message):
    __slots__ = ("full", "tasks", "removed", "networks", "removed_networks", "dns", "removed_dns", "dns_network_names")
    FULL_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_NETWORKS_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_DNS_FIELD_NUMBER: _ClassVar[int]
    DNS_NETWORK_NAMES_FIELD_NUMBER: _ClassVar[int]
    full: bool
    tasks: _containers.RepeatedCompositeFieldContainer[_objects_pb2.Task]
    removed: _containers.RepeatedScalarFieldContainer[str]
    networks: _containers.RepeatedCompositeFieldContainer[NetworkPeers]
    removed_networks: _containers.RepeatedScalarFieldContainer[str]
    dns: _containers.RepeatedCompositeFieldContainer[DnsRecords]
    removed_dns: _containers.RepeatedScalarFieldContainer[str]
    dns_network_names: DnsNetworkNames
    def __init__(self, full: _Optional[bool] = ..., tasks: _Optional[_Iterable[_Union[_objects_pb2.Task, _Mapping]]] = ..., removed: _Optional[_Iterable[str]] = ..., networks: _Optional[_Iterable[_Union[NetworkPeers, _Mapping]]] = ..., removed_networks: _Optional[_Iterable[str]] = ..., dns: _Optional[_Iterable[_Union[DnsRecords, _Mapping]]] = ..., removed_dns: _Optional[_Iterable[str]] = ..., dns_network_names: _Optional[_Union[DnsNetworkNames, _Mapping]] = ...) -> None: ...

class LogSubscription(_message.Message):
    __slots__ = ("id", "task_ids", "follow", "tail", "close")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    id: str
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    follow: bool
    tail: int
    close: bool
    def __init__(self, id: _Optional[str] = ..., task_ids: _Optional[_Iterable[str]] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ..., close: _Optional[bool] = ...) -> None: ...

class ExecCommand(_message.Message):
    __slots__ = ("id", "task_id", "argv", "env", "kill")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    KILL_FIELD_NUMBER: _ClassVar[int]
    id: str
    task_id: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedScalarFieldContainer[str]
    kill: bool
    def __init__(self, id: _Optional[str] = ..., task_id: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[str]] = ..., kill: _Optional[bool] = ...) -> None: ...

class ManagerMessage(_message.Message):
    __slots__ = ("started", "assignments", "log_subscription", "exec")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    LOG_SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXEC_FIELD_NUMBER: _ClassVar[int]
    started: SessionStarted
    assignments: Assignments
    log_subscription: LogSubscription
    exec: ExecCommand
    def __init__(self, started: _Optional[_Union[SessionStarted, _Mapping]] = ..., assignments: _Optional[_Union[Assignments, _Mapping]] = ..., log_subscription: _Optional[_Union[LogSubscription, _Mapping]] = ..., exec: _Optional[_Union[ExecCommand, _Mapping]] = ...) -> None: ...

class PublishLogsMessage(_message.Message):
    __slots__ = ("subscription_id", "entries", "close", "err", "node_id")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    entries: _containers.RepeatedCompositeFieldContainer[_control_pb2.LogEntry]
    close: bool
    err: str
    node_id: str
    def __init__(self, subscription_id: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[_control_pb2.LogEntry, _Mapping]]] = ..., close: _Optional[bool] = ..., err: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class PublishExecMessage(_message.Message):
    __slots__ = ("exec_id", "node_id", "output", "err")
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    node_id: str
    output: _control_pb2.ExecOutput
    err: str
    def __init__(self, exec_id: _Optional[str] = ..., node_id: _Optional[str] = ..., output: _Optional[_Union[_control_pb2.ExecOutput, _Mapping]] = ..., err: _Optional[str] = ...) -> None: ...
