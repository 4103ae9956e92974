import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    NEW: _ClassVar[TaskState]
    PENDING: _ClassVar[TaskState]
    ASSIGNED: _ClassVar[TaskState]
    ACCEPTED: _ClassVar[TaskState]
    PREPARING: _ClassVar[TaskState]
    STARTING: _ClassVar[TaskState]
    RUNNING: _ClassVar[TaskState]
    COMPLETE: _ClassVar[TaskState]
    SHUTDOWN: _ClassVar[TaskState]
    FAILED: _ClassVar[TaskState]
    REJECTED: _ClassVar[TaskState]
    ORPHANED: _ClassVar[TaskState]
    REMOVE: _ClassVar[TaskState]

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_UNSPECIFIED: _ClassVar[HealthState]
    HEALTH_NONE: _ClassVar[HealthState]
    HEALTH_STARTING: _ClassVar[HealthState]
    HEALTH_HEALTHY: _ClassVar[HealthState]
    HEALTH_UNHEALTHY: _ClassVar[HealthState]

class RestartCondition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESTART_CONDITION_UNSPECIFIED: _ClassVar[RestartCondition]
    RESTART_NONE: _ClassVar[RestartCondition]
    RESTART_ON_FAILURE: _ClassVar[RestartCondition]
    RESTART_ANY: _ClassVar[RestartCondition]

class NodeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATUS_UNSPECIFIED: _ClassVar[NodeStatus]
    NODE_READY: _ClassVar[NodeStatus]
    NODE_DOWN: _ClassVar[NodeStatus]
    NODE_DISCONNECTED: _ClassVar[NodeStatus]

class NodeAvailability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AVAILABILITY_UNSPECIFIED: _ClassVar[NodeAvailability]
    ACTIVE: _ClassVar[NodeAvailability]
    PAUSE: _ClassVar[NodeAvailability]
    DRAIN: _ClassVar[NodeAvailability]
TASK_STATE_UNSPECIFIED: TaskState
NEW: TaskState
PENDING: TaskState
ASSIGNED: TaskState
ACCEPTED: TaskState
PREPARING: TaskState
STARTING: TaskState
RUNNING: TaskState
COMPLETE: TaskState
SHUTDOWN: TaskState
FAILED: TaskState
REJECTED: TaskState
ORPHANED: TaskState
REMOVE: TaskState
HEALTH_UNSPECIFIED: HealthState
HEALTH_NONE: HealthState
HEALTH_STARTING: HealthState
HEALTH_HEALTHY: HealthState
HEALTH_UNHEALTHY: HealthState
RESTART_CONDITION_UNSPECIFIED: RestartCondition
RESTART_NONE: RestartCondition
RESTART_ON_FAILURE: RestartCondition
RESTART_ANY: RestartCondition
NODE_STATUS_UNSPECIFIED: NodeStatus
NODE_READY: NodeStatus
NODE_DOWN: NodeStatus
NODE_DISCONNECTED: NodeStatus
AVAILABILITY_UNSPECIFIED: NodeAvailability
ACTIVE: NodeAvailability
PAUSE: NodeAvailability
DRAIN: NodeAvailability

class Resources(_message.Message):
    __slots__ = ("nano_cpus", "memory_bytes", "pids")
    NANO_CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    nano_cpus: int
    memory_bytes: int
    pids: int
    def __init__(self, nano_cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., pids: _Optional[int] = ...) -> None: ...

class ResourceRequirements(_message.Message):
    __slots__ = ("limits", "reservations")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    limits: Resources
    reservations: Resources
    def __init__(self, limits: _Optional[_Union[Resources, _Mapping]] = ..., reservations: _Optional[_Union[Resources, _Mapping]] = ...) -> None: ...

class RestartPolicy(_message.Message):
    __slots__ = ("condition", "delay", "max_attempts", "window", "max_delay")
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_FIELD_NUMBER: _ClassVar[int]
    condition: RestartCondition
    delay: _duration_pb2.Duration
    max_attempts: int
    window: _duration_pb2.Duration
    max_delay: _duration_pb2.Duration
    def __init__(self, condition: _Optional[_Union[RestartCondition, str]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_attempts: _Optional[int] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
