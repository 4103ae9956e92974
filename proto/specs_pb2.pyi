import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from orch.proto import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServiceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICATED: _ClassVar[ServiceMode]
    GLOBAL: _ClassVar[ServiceMode]
REPLICATED: ServiceMode
GLOBAL: ServiceMode

class ContainerSpec(_message.Message):
    __slots__ = ("image", "command", "args", "env", "workdir", "hostname", "user", "stop_grace_period", "stop_signal", "labels", "healthcheck")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    STOP_GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    STOP_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HEALTHCHECK_FIELD_NUMBER: _ClassVar[int]
    image: str
    command: _containers.RepeatedScalarFieldContainer[str]
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedScalarFieldContainer[str]
    workdir: str
    hostname: str
    user: str
    stop_grace_period: _duration_pb2.Duration
    stop_signal: str
    labels: _containers.ScalarMap[str, str]
    healthcheck: HealthCheck
    def __init__(self, image: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[str]] = ..., workdir: _Optional[str] = ..., hostname: _Optional[str] = ..., user: _Optional[str] = ..., stop_grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stop_signal: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., healthcheck: _Optional[_Union[HealthCheck, _Mapping]] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("exec", "http", "tcp", "interval", "timeout", "retries", "start_period")
    EXEC_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    TCP_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    START_PERIOD_FIELD_NUMBER: _ClassVar[int]
    exec: ExecProbe
    http: HttpProbe
    tcp: TcpProbe
    interval: _duration_pb2.Duration
    timeout: _duration_pb2.Duration
    retries: int
    start_period: _duration_pb2.Duration
    def __init__(self, exec: _Optional[_Union[ExecProbe, _Mapping]] = ..., http: _Optional[_Union[HttpProbe, _Mapping]] = ..., tcp: _Optional[_Union[TcpProbe, _Mapping]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retries: _Optional[int] = ..., start_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ExecProbe(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, command: _Optional[_Iterable[str]] = ...) -> None: ...

class HttpProbe(_message.Message):
    __slots__ = ("port", "path", "scheme")
    PORT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    port: int
    path: str
    scheme: str
    def __init__(self, port: _Optional[int] = ..., path: _Optional[str] = ..., scheme: _Optional[str] = ...) -> None: ...

class TcpProbe(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: int
    def __init__(self, port: _Optional[int] = ...) -> None: ...

class NetworkAttachmentConfig(_message.Message):
    __slots__ = ("target", "aliases")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    target: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, target: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class PortConfig(_message.Message):
    __slots__ = ("target", "published", "protocol", "mode")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    target: int
    published: int
    protocol: str
    mode: str
    def __init__(self, target: _Optional[int] = ..., published: _Optional[int] = ..., protocol: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class ServiceSpec(_message.Message):
    __slots__ = ("name", "labels", "container", "replicas", "resources", "restart_policy", "networks", "ports", "update", "rollback", "placement", "mode")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    RESTART_POLICY_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    container: ContainerSpec
    replicas: int
    resources: _types_pb2.ResourceRequirements
    restart_policy: _types_pb2.RestartPolicy
    networks: _containers.RepeatedCompositeFieldContainer[NetworkAttachmentConfig]
    ports: _containers.RepeatedCompositeFieldContainer[PortConfig]
    update: UpdateConfig
    rollback: UpdateConfig
    placement: Placement
    mode: ServiceMode
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., container: _Optional[_Union[ContainerSpec, _Mapping]] = ..., replicas: _Optional[int] = ..., resources: _Optional[_Union[_types_pb2.ResourceRequirements, _Mapping]] = ..., restart_policy: _Optional[_Union[_types_pb2.RestartPolicy, _Mapping]] = ..., networks: _Optional[_Iterable[_Union[NetworkAttachmentConfig, _Mapping]]] = ..., ports: _Optional[_Iterable[_Union[PortConfig, _Mapping]]] = ..., update: _Optional[_Union[UpdateConfig, _Mapping]] = ..., rollback: _Optional[_Union[UpdateConfig, _Mapping]] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., mode: _Optional[_Union[ServiceMode, str]] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("constraints", "preferences", "max_replicas_per_node")
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    constraints: _containers.RepeatedScalarFieldContainer[str]
    preferences: _containers.RepeatedCompositeFieldContainer[PlacementPreference]
    max_replicas_per_node: int
    def __init__(self, constraints: _Optional[_Iterable[str]] = ..., preferences: _Optional[_Iterable[_Union[PlacementPreference, _Mapping]]] = ..., max_replicas_per_node: _Optional[int] = ...) -> None: ...

class PlacementPreference(_message.Message):
    __slots__ = ("spread",)
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    spread: str
    def __init__(self, spread: _Optional[str] = ...) -> None: ...

class UpdateConfig(_message.Message):
    __slots__ = ("parallelism", "delay", "order", "monitor", "failure_action", "max_failure_ratio")
    class Order(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ORDER_UNSPECIFIED: _ClassVar[UpdateConfig.Order]
        STOP_FIRST: _ClassVar[UpdateConfig.Order]
        START_FIRST: _ClassVar[UpdateConfig.Order]
    ORDER_UNSPECIFIED: UpdateConfig.Order
    STOP_FIRST: UpdateConfig.Order
    START_FIRST: UpdateConfig.Order
    class FailureAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FAILURE_ACTION_UNSPECIFIED: _ClassVar[UpdateConfig.FailureAction]
        PAUSE: _ClassVar[UpdateConfig.FailureAction]
        ROLLBACK: _ClassVar[UpdateConfig.FailureAction]
        CONTINUE: _ClassVar[UpdateConfig.FailureAction]
    FAILURE_ACTION_UNSPECIFIED: UpdateConfig.FailureAction
    PAUSE: UpdateConfig.FailureAction
    ROLLBACK: UpdateConfig.FailureAction
    CONTINUE: UpdateConfig.FailureAction
    PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    FAILURE_ACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURE_RATIO_FIELD_NUMBER: _ClassVar[int]
    parallelism: int
    delay: _duration_pb2.Duration
    order: UpdateConfig.Order
    monitor: _duration_pb2.Duration
    failure_action: UpdateConfig.FailureAction
    max_failure_ratio: float
    def __init__(self, parallelism: _Optional[int] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., order: _Optional[_Union[UpdateConfig.Order, str]] = ..., monitor: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., failure_action: _Optional[_Union[UpdateConfig.FailureAction, str]] = ..., max_failure_ratio: _Optional[float] = ...) -> None: ...

class NetworkSpec(_message.Message):
    __slots__ = ("name", "driver", "subnet", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    driver: str
    subnet: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., driver: _Optional[str] = ..., subnet: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...
