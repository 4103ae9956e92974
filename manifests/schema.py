"""The manifest format as a table: every field of every kind, its type, default and meaning.

One table serves three readers: the loader walks it to check and convert YAML values,
``render`` walks it backwards to print a spec as a manifest, and ``orch explain`` can
print it (``iter_fields``). A field says where its value lands in the protobuf
(``target``, a dotted path from the spec message), so loading and rendering need no
per-field code.

Types are small frozen dataclasses: ``Scalar`` (a parser and its inverse), ``ListOf``,
``MapOf``, ``Obj`` (named fields) and ``OneOf`` (picks by the YAML shape: a string, a
list or a mapping, for fields that take "a list, or a shell string"). Parsers only check
what a YAML value must be to fit the protobuf; rules about values (name syntax, limits
>= reservations) are in validate.py, which the manager runs too. This module is pure.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.duration_pb2 import Duration

from orch.manifests import units
from orch.manifests.problems import describe_value
from orch.manifests.validate import SIGNALS
from orch.proto import specs_pb2, types_pb2

API_VERSION = "orch/v1"
KINDS = ("Service", "Network")
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


class Invalid(ValueError):
    """A YAML value that does not fit its field. ``accepted`` is shown when set."""

    def __init__(self, message: str, accepted: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.accepted = accepted


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Scalar:
    """A single YAML value. ``parse(value, source_text)`` converts it or raises Invalid."""

    accepted: str
    parse: Callable[[Any, str | None], Any]
    render: Callable[[Any], Any] = _identity


@dataclass(frozen=True)
class ListOf:
    item: Type
    accepted: str

    def render(self, value: Any) -> Any:
        return [self.item.render(v) for v in value]


@dataclass(frozen=True)
class MapOf:
    """A mapping with free-form string keys; ``convert`` reshapes the result (env -> list)."""

    value: Type
    accepted: str
    check_key: Callable[[str], None] | None = None
    convert: Callable[[dict[str, Any]], Any] | None = None

    def render(self, value: Any) -> Any:
        return {k: self.value.render(v) for k, v in sorted(value.items())}


@dataclass(frozen=True)
class Obj:
    """A mapping with known fields. Without ``convert`` its fields land in the spec
    through their targets; with it, the decoded dict becomes one value (a message)."""

    fields: tuple[Field, ...]
    accepted: str = "a mapping"
    convert: Callable[[dict[str, Any]], Any] | None = None
    """May raise Invalid about the mapping as a whole (two probes given)."""
    unknown: Callable[[str], Invalid] | None = None
    """Says what an unknown key is, when "unknown field" would not (an unknown probe
    type); used when no known field looks like the key."""
    by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})


@dataclass(frozen=True)
class OneOf:
    """Different shapes for one field, chosen by the YAML value's shape."""

    accepted: str
    render: Callable[[Any], Any]
    scalar: Type | None = None
    list: Type | None = None
    map: Type | None = None


Type = Scalar | ListOf | MapOf | Obj | OneOf


@dataclass(frozen=True)
class Field:
    name: str
    type: Type
    doc: str
    target: str | None = None
    """Dotted path of the protobuf field the value lands in, from the spec message."""
    default: Any = None
    """Value (already converted) set when the field is absent; None: the protobuf's default."""
    required: bool = False
    always: bool = False
    """Render even a zero value (replicas: 0 means zero, not unset)."""
    aliases: tuple[str, ...] = ()
    """Names other tools use for this field; an unknown key matching one gets a hint."""


# ---- scalar parsers ---------------------------------------------------------------------


def _string(value: Any, raw: str | None) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {describe_value(value)}")
    return value


def _text(value: Any, raw: str | None) -> str:
    """A string; a number is taken as written (``PORT: 0800`` -> "0800")."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise Invalid(f"expected a string, got {describe_value(value)}; quote it: '{raw}'")
    if isinstance(value, int | float):
        return raw if raw is not None else str(value)
    raise Invalid(f"expected a string, got {describe_value(value)}")


def _integer(minimum: int, maximum: int) -> Callable[[Any, str | None], int]:
    def parse(value: Any, raw: str | None) -> int:
        expected = f"an integer >= {minimum}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected {expected}, got {describe_value(value)}")
        if value < minimum:
            raise Invalid(f"expected {expected}, got {value}")
        if value > maximum:
            raise Invalid(f"expected an integer <= {maximum}, got {value}")
        return value

    return parse


def _unit(parse: Callable[[Any], int]) -> Callable[[Any, str | None], int]:
    def wrapped(value: Any, raw: str | None) -> int:
        if value is None or isinstance(value, dict | list):
            raise Invalid(f"expected a value, got {describe_value(value)}")
        try:
            return parse(value)
        except units.UnitError as exc:
            raise Invalid(exc.message, exc.accepted) from exc

    return wrapped


def _duration(value: Any, raw: str | None) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(_unit(units.parse_duration)(value, raw))
    return duration


def _render_duration(duration: Duration) -> str:
    return units.format_duration(duration.ToNanoseconds())


def _shell_words(value: Any, raw: str | None) -> list[str]:
    text = _string(value, raw)
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise Invalid(f"cannot split {text!r} like a shell would: {exc}") from exc


_CONDITIONS = {
    "none": types_pb2.RESTART_NONE,
    "on-failure": types_pb2.RESTART_ON_FAILURE,
    "any": types_pb2.RESTART_ANY,
}


def _choice(table: dict[str, int], what: str = "value") -> Callable[[Any, str | None], int]:
    """A parser for one of ``table``'s names (case and '_' or '-' as the user likes)."""

    def parse(value: Any, raw: str | None) -> int:
        text = _string(value, raw)
        found = table.get(text.lower().replace("_", "-"))
        if found is None:
            raise Invalid(f"unknown {what} {text!r}", ", ".join(table))
        return found

    return parse


_condition = _choice(_CONDITIONS, "condition")


def _render_condition(condition: int) -> str:
    return {v: k for k, v in _CONDITIONS.items()}[condition]


def _signal(value: Any, raw: str | None) -> str:
    accepted = "a signal name like SIGTERM or TERM, or its number"
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= len(SIGNALS):
            return SIGNALS[value - 1]
        raise Invalid(f"unknown signal number {value}", accepted)
    name = _string(value, raw).upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in SIGNALS:
        raise Invalid(f"unknown signal {value!r}", accepted)
    return name


def _api_version(value: Any, raw: str | None) -> str:
    if _string(value, raw) != API_VERSION:
        raise Invalid(f"unsupported apiVersion {value!r}", API_VERSION)
    return value


def _kind(value: Any, raw: str | None) -> str:
    text = _string(value, raw)
    if text not in KINDS:
        close = [k for k in KINDS if k.lower() == text.lower()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise Invalid(f"unknown kind {text!r}{hint}", ", ".join(KINDS))
    return text


def _env_key(key: str) -> None:
    if not key or "=" in key:
        raise Invalid(f"invalid variable name {key!r}", "a name without '='")


def _env_map(env: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def _render_env(env: list[str]) -> Any:
    pairs = [item.partition("=") for item in env]
    keys = [k for k, _, _ in pairs]
    if all(sep for _, sep, _ in pairs) and len(set(keys)) == len(keys):
        return {k: v for k, _, v in pairs}
    return list(env)


def _attachment(value: Any, raw: str | None) -> specs_pb2.NetworkAttachmentConfig:
    return specs_pb2.NetworkAttachmentConfig(target=_string(value, raw))


def _attachment_from(fields: dict[str, Any]) -> specs_pb2.NetworkAttachmentConfig:
    return specs_pb2.NetworkAttachmentConfig(
        target=fields.get("name", ""), aliases=fields.get("aliases", [])
    )


def _render_attachment(net: specs_pb2.NetworkAttachmentConfig) -> Any:
    if not net.aliases:
        return net.target
    return {"name": net.target, "aliases": list(net.aliases)}


_PORT_SHORT = re.compile(r"(\d{1,10}):(\d{1,10})(?:/([a-z]+))?")
PORT_SHORT_ACCEPTED = 'PUBLISHED:TARGET[/PROTOCOL], e.g. "8080:80" or "5353:53/udp"'


def _port_short(value: Any, raw: str | None) -> specs_pb2.PortConfig:
    """ "8080:80" and "8080:80/udp". Unquoted, YAML 1.1 reads 8080:80 as a base-60 number
    (484880); the text as written is used instead."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid(f"expected a string, got {describe_value(value)}", PORT_SHORT_ACCEPTED)
    text = raw if isinstance(value, int) and raw is not None else str(value)
    match = _PORT_SHORT.fullmatch(text.strip())
    if match is None:
        if text.strip().isdigit():
            message = f"{text!r} names only the container's port; give the node's port too"
        else:
            message = f"invalid port {text!r}"
        raise Invalid(message, PORT_SHORT_ACCEPTED)
    published, target = int(match.group(1)), int(match.group(2))
    if max(published, target) > UINT32_MAX:
        raise Invalid(f"invalid port {text!r}: number too large", PORT_SHORT_ACCEPTED)
    return specs_pb2.PortConfig(
        target=target, published=published, protocol=match.group(3) or "tcp", mode="host"
    )


def _port_from(fields: dict[str, Any]) -> specs_pb2.PortConfig:
    return specs_pb2.PortConfig(
        target=fields.get("target", 0),
        published=fields.get("published", 0),
        protocol=fields.get("protocol", "tcp"),
        mode=fields.get("mode", "host"),
    )


def _render_port(port: specs_pb2.PortConfig) -> Any:
    if port.mode == "host" and port.protocol in ("tcp", "udp") and port.published and port.target:
        tail = "" if port.protocol == "tcp" else f"/{port.protocol}"
        return f"{port.published}:{port.target}{tail}"
    out: dict[str, Any] = {"target": port.target}
    if port.published:
        out["published"] = port.published
    out["protocol"] = port.protocol
    out["mode"] = port.mode
    return out


PROBE_TYPES = ("exec", "http", "tcp")
HEALTH_SETTINGS = ("interval", "timeout", "retries", "start_period")
SHELL = ("/bin/sh", "-c")
"""A string given as an exec probe runs through the shell (Docker's CMD-SHELL)."""


def _unknown_probe(key: str) -> Invalid:
    """An unknown key under healthcheck: mostly a probe type we do not have (grpc), or a
    probe's own field written one level too high."""
    if key in ("port", "path", "scheme"):
        return Invalid(
            f"{key!r} belongs inside the probe", "http: {port, path, scheme}, tcp: {port}"
        )
    if key in ("type", "command", "test", "cmd"):
        return Invalid(
            f"unknown field {key!r}: the probe is given by its type's key",
            'exec: [cmd, arg] or exec: "shell command", http: {port, path}, tcp: {port}',
        )
    return Invalid(
        f"unknown probe type {key!r}",
        f"a probe: {', '.join(PROBE_TYPES)}; and the settings {', '.join(HEALTH_SETTINGS)}",
    )


def _shell_command(value: Any, raw: str | None) -> list[str]:
    text = _string(value, raw)
    if not text.strip():
        raise Invalid("the command cannot be empty")
    return [*SHELL, text]


def _http_from(fields: dict[str, Any]) -> specs_pb2.HttpProbe:
    return specs_pb2.HttpProbe(
        port=fields.get("port", 0), path=fields.get("path", ""), scheme=fields.get("scheme", "")
    )


def _tcp_from(fields: dict[str, Any]) -> specs_pb2.TcpProbe:
    return specs_pb2.TcpProbe(port=fields.get("port", 0))


def _healthcheck_from(fields: dict[str, Any]) -> specs_pb2.HealthCheck:
    probes = [k for k in PROBE_TYPES if k in fields]
    accepted = f"exactly one of {', '.join(PROBE_TYPES)}"
    if len(probes) > 1:
        raise Invalid(f"more than one probe given ({', '.join(probes)})", accepted)
    if not probes:
        raise Invalid("no probe given", accepted)
    if "exec" in fields and not fields["exec"]:
        raise Invalid("exec: the command cannot be empty")
    check = specs_pb2.HealthCheck()
    if "exec" in fields:
        check.exec.command.extend(fields["exec"])
    elif "http" in fields:
        check.http.CopyFrom(fields["http"])
    else:
        check.tcp.CopyFrom(fields["tcp"])
    for name in ("interval", "timeout", "start_period"):
        if name in fields:
            getattr(check, name).CopyFrom(fields[name])
    check.retries = fields.get("retries", 0)
    return check


def _render_healthcheck(check: specs_pb2.HealthCheck) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = check.WhichOneof("probe")
    if kind == "exec":
        command = list(check.exec.command)
        shell = len(command) == 3 and tuple(command[:2]) == SHELL
        out["exec"] = command[2] if shell else command
    elif kind == "http":
        http: dict[str, Any] = {"port": check.http.port}
        if check.http.path:
            http["path"] = check.http.path
        if check.http.scheme and check.http.scheme != "http":
            http["scheme"] = check.http.scheme
        out["http"] = http
    elif kind == "tcp":
        out["tcp"] = {"port": check.tcp.port}
    for name in ("interval", "timeout"):
        if check.HasField(name):
            out[name] = _render_duration(getattr(check, name))
    if check.retries:
        out["retries"] = check.retries
    if check.HasField("start_period"):
        out["start_period"] = _render_duration(check.start_period)
    return out


_MODES = {"replicated": specs_pb2.REPLICATED, "global": specs_pb2.GLOBAL}


def _mode(value: Any, raw: str | None) -> int:
    text = _string(value, raw)
    found = _MODES.get(text.lower())
    if found is None:
        raise Invalid(f"unknown mode {text!r}", ", ".join(_MODES))
    return found


def _render_mode(mode: int) -> str:
    return {v: k for k, v in _MODES.items()}[mode]


def _preference_from(fields: dict[str, Any]) -> specs_pb2.PlacementPreference:
    return specs_pb2.PlacementPreference(spread=fields.get("spread", ""))


def _render_preference(pref: specs_pb2.PlacementPreference) -> dict[str, Any]:
    return {"spread": pref.spread}


# ---- the table --------------------------------------------------------------------------

STRING = Scalar("a string", _string)
TEXT = Scalar("a string", _text)
LABELS = MapOf(TEXT, "a mapping of label keys to strings")
DURATION = Scalar(units.DURATION_ACCEPTED, _duration, _render_duration)
CPUS = Scalar(units.CPUS_ACCEPTED, _unit(units.parse_cpus), units.format_cpus)
SIZE = Scalar(units.SIZE_ACCEPTED, _unit(units.parse_size), units.format_size)
WORDS = OneOf(
    "a list of strings, or a string split like a shell would",
    render=list,
    scalar=Scalar("a string", _shell_words),
    list=ListOf(TEXT, "a list of strings"),
)

_HEADER = (
    Field("apiVersion", Scalar(API_VERSION, _api_version), "Format version.", required=True),
    Field("kind", Scalar(", ".join(KINDS), _kind), "What the document describes.", required=True),
)


def _metadata(what: str) -> Field:
    return Field(
        "metadata",
        Obj(
            (
                Field("name", STRING, f"The {what}'s name, a DNS label; unique.", "name"),
                Field("labels", LABELS, f"Labels of the {what}, for people and filters.", "labels"),
            )
        ),
        "Name and labels.",
    )


def _resources(kind: str, with_pids: bool) -> Field:
    fields = [
        Field("cpus", CPUS, f"CPUs ({kind}).", f"resources.{kind}.nano_cpus"),
        Field("memory", SIZE, f"Memory ({kind}).", f"resources.{kind}.memory_bytes"),
    ]
    if with_pids:
        fields.append(
            Field(
                "pids",
                Scalar("an integer >= 0", _integer(0, units.INT64_MAX)),
                "Most processes the container may have; 0: no limit.",
                "resources.limits.pids",
            )
        )
    doc = {
        "limits": "Enforced through the container's cgroup.",
        "reservations": "Set aside on the node by the scheduler.",
    }[kind]
    return Field(kind, Obj(tuple(fields)), doc)


_RESTART_POLICY = Field(
    "restart_policy",
    Obj(
        (
            Field(
                "condition",
                Scalar(", ".join(_CONDITIONS), _condition, _render_condition),
                "When a task's exit is followed by a new task: none, on-failure or any "
                "(default any).",
                "restart_policy.condition",
            ),
            Field(
                "delay",
                DURATION,
                "Wait before the first restart; doubles per restart.",
                "restart_policy.delay",
            ),
            Field(
                "max_attempts",
                Scalar("an integer >= 0", _integer(0, UINT32_MAX)),
                "Restarts within window before giving up; 0: unlimited.",
                "restart_policy.max_attempts",
            ),
            Field(
                "window",
                DURATION,
                "Restarts older than this do not count; 0: forever.",
                "restart_policy.window",
            ),
            Field(
                "max_delay",
                DURATION,
                "Upper bound of the doubling delay.",
                "restart_policy.max_delay",
            ),
        )
    ),
    "What happens when a task's container exits.",
    aliases=("restart", "restartPolicy"),
)


def _probe_port(value: Any, raw: str | None) -> int:
    """1-65535 here already: a zero port would leave an empty probe message, which the
    loader prunes as unset (no check at all) before validate.py could object."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid(f"expected a port 1-65535, got {describe_value(value)}")
    return value


_PROBE_PORT = Field(
    "port", Scalar("a port 1-65535", _probe_port), "The port to probe.", required=True
)
_HEALTHCHECK = Field(
    "healthcheck",
    OneOf(
        "a mapping with one probe (exec, http or tcp) and interval, timeout, retries, start_period",
        render=_render_healthcheck,
        map=Obj(
            (
                Field(
                    "exec",
                    OneOf(
                        "a command: a list of strings, or a string run by /bin/sh -c",
                        render=list,
                        scalar=Scalar("a string", _shell_command),
                        list=ListOf(TEXT, "a list of strings"),
                    ),
                    "Probe: a command run in the container; exit 0 is healthy. A string runs "
                    "through /bin/sh -c.",
                ),
                Field(
                    "http",
                    Obj(
                        (
                            _PROBE_PORT,
                            Field("path", STRING, "Path to GET; default /.", default="/"),
                            Field("scheme", STRING, "http (default) or https.", default="http"),
                        ),
                        "a mapping with port, path and scheme",
                        convert=_http_from,
                    ),
                    "Probe: GET the task's address:port/path from its node; 2xx and 3xx are "
                    "healthy.",
                ),
                Field(
                    "tcp",
                    Obj((_PROBE_PORT,), "a mapping with port", convert=_tcp_from),
                    "Probe: connect to the task's address:port from its node.",
                ),
                Field(
                    "interval",
                    DURATION,
                    "From the end of one probe to the start of the next; default 30s. The "
                    "first probe comes one interval after the start.",
                ),
                Field("timeout", DURATION, "A probe taking longer fails; default 30s."),
                Field(
                    "retries",
                    Scalar("an integer >= 1", _integer(1, UINT32_MAX)),
                    "Consecutive failures that make the task unhealthy; default 3.",
                ),
                Field(
                    "start_period",
                    DURATION,
                    "Failures in this time after the start do not count, until the first "
                    "success; default 0s.",
                ),
            ),
            "a mapping with one probe (exec, http or tcp) and interval, timeout, retries, "
            "start_period",
            convert=_healthcheck_from,
            unknown=_unknown_probe,
        ),
    ),
    "How the node probes each task; an unhealthy task is stopped, failed and restarted per "
    "the restart policy.",
    "container.healthcheck",
    aliases=("health_check", "healthCheck", "health"),
)

_MODE = Field(
    "mode",
    Scalar(", ".join(_MODES), _mode, _render_mode),
    "replicated (default): `replicas` tasks placed by the scheduler; global: one task on "
    "every eligible node (active, up, matching the constraints), following nodes as they "
    "join, drain or change labels.",
    "mode",
)
_PLACEMENT = Field(
    "placement",
    Obj(
        (
            Field(
                "constraints",
                ListOf(STRING, "a list of constraints"),
                "All must hold on a node that runs a task: ATTRIBUTE==VALUE or "
                "ATTRIBUTE!=VALUE over node.id, node.hostname, node.labels.KEY, "
                "engine.labels.KEY, node.platform.os, node.platform.arch.",
                "placement.constraints",
                aliases=("constraint",),
            ),
            Field(
                "preferences",
                ListOf(
                    OneOf(
                        "a mapping with spread",
                        render=_render_preference,
                        map=Obj(
                            (
                                Field(
                                    "spread",
                                    STRING,
                                    "A node attribute, e.g. node.labels.zone: tasks go to "
                                    "the value holding fewest of them first.",
                                    required=True,
                                ),
                            ),
                            "a mapping with spread",
                            convert=_preference_from,
                        ),
                    ),
                    "a list of preferences",
                ),
                "Spread preferences, in order (replicated services).",
                "placement.preferences",
                aliases=("preference", "spread"),
            ),
            Field(
                "max_replicas_per_node",
                Scalar("an integer >= 0", _integer(0, UINT64_MAX)),
                "At most this many tasks of the service on one node; 0: no limit "
                "(replicated services).",
                "placement.max_replicas_per_node",
                aliases=("replicas_max_per_node", "maxReplicasPerNode"),
            ),
        )
    ),
    "Where tasks may run and how they spread over nodes.",
)

_ORDERS = {
    "stop-first": specs_pb2.UpdateConfig.STOP_FIRST,
    "start-first": specs_pb2.UpdateConfig.START_FIRST,
}
_ACTIONS = {
    "pause": specs_pb2.UpdateConfig.PAUSE,
    "rollback": specs_pb2.UpdateConfig.ROLLBACK,
    "continue": specs_pb2.UpdateConfig.CONTINUE,
}


def _ratio(value: Any, raw: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise Invalid(f"expected a number from 0 to 1, got {describe_value(value)}")
    return float(value)


def _update_from(fields: dict[str, Any]) -> specs_pb2.UpdateConfig:
    cfg = specs_pb2.UpdateConfig(
        parallelism=fields.get("parallelism", 1),
        order=fields.get("order", specs_pb2.UpdateConfig.STOP_FIRST),
        failure_action=fields.get("failure_action", specs_pb2.UpdateConfig.PAUSE),
        max_failure_ratio=fields.get("max_failure_ratio", 0.0),
    )
    for name in ("delay", "monitor"):
        if name in fields:
            getattr(cfg, name).CopyFrom(fields[name])
    return cfg


def _render_update(cfg: specs_pb2.UpdateConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"parallelism": cfg.parallelism}
    if cfg.HasField("delay"):
        out["delay"] = _render_duration(cfg.delay)
    out["order"] = {v: k for k, v in _ORDERS.items()}.get(cfg.order, "stop-first")
    if cfg.HasField("monitor"):
        out["monitor"] = _render_duration(cfg.monitor)
    out["failure_action"] = {v: k for k, v in _ACTIONS.items()}.get(cfg.failure_action, "pause")
    if cfg.max_failure_ratio:
        out["max_failure_ratio"] = round(cfg.max_failure_ratio, 6)
    return out


def _update_field(name: str, doc: str) -> Field:
    return Field(
        name,
        OneOf(
            "a mapping with parallelism, delay, order, monitor, failure_action, max_failure_ratio",
            render=_render_update,
            map=Obj(
                (
                    Field(
                        "parallelism",
                        Scalar("an integer >= 0", _integer(0, UINT64_MAX)),
                        "Tasks replaced at once; 0: all at once; default 1.",
                    ),
                    Field("delay", DURATION, "Wait between a batch being ready and the next."),
                    Field(
                        "order",
                        Scalar(", ".join(_ORDERS), _choice(_ORDERS)),
                        "stop-first (default): stop the old task, then start the new one; "
                        "start-first: start the new one, stop the old once it is ready.",
                    ),
                    Field(
                        "monitor",
                        DURATION,
                        "A new task failing within this time of its start is a failure; "
                        "default 5s.",
                    ),
                    Field(
                        "failure_action",
                        Scalar(", ".join(_ACTIONS), _choice(_ACTIONS)),
                        "What a failure does: pause (default), rollback or continue.",
                    ),
                    Field(
                        "max_failure_ratio",
                        Scalar("a number from 0 to 1", _ratio),
                        "Failures tolerated, as a share of the replicas; default 0.",
                    ),
                ),
                "a mapping with parallelism, delay, order, monitor, failure_action, "
                "max_failure_ratio",
                convert=_update_from,
            ),
        ),
        doc,
        name,
        aliases=(f"{name}_config", f"{name}Config"),
    )


_NETWORK_ITEM = OneOf(
    "a network name, or {name, aliases}",
    render=_render_attachment,
    scalar=Scalar("a network name", _attachment),
    map=Obj(
        (
            Field(
                "name",
                STRING,
                "The network: bridge, host, none or a Network's name.",
                required=True,
            ),
            Field(
                "aliases",
                ListOf(STRING, "a list of DNS names"),
                "Extra DNS names of the service on this network.",
            ),
        ),
        "a mapping with name and aliases",
        convert=_attachment_from,
    ),
)

_PORT_NUMBER = Scalar("a port number", _integer(0, UINT32_MAX))
_PORT_ITEM = OneOf(
    f"{PORT_SHORT_ACCEPTED}, or {{target, published, protocol, mode}}",
    render=_render_port,
    scalar=Scalar(PORT_SHORT_ACCEPTED, _port_short),
    map=Obj(
        (
            Field("target", _PORT_NUMBER, "The port inside the container.", required=True),
            Field("published", _PORT_NUMBER, "The port on the node running the task."),
            Field("protocol", STRING, "tcp (default) or udp.", default="tcp"),
            Field(
                "mode", STRING, "host (default): the port on the task's node only.", default="host"
            ),
        ),
        "a mapping with target, published, protocol and mode",
        convert=_port_from,
    ),
)

SERVICE_SPEC = Obj(
    (
        Field(
            "image",
            STRING,
            "Image to run: host:port/name:tag or oci:/abs/path:tag.",
            "container.image",
        ),
        Field(
            "command",
            WORDS,
            "Replaces the image's entrypoint.",
            "container.command",
            aliases=("entrypoint",),
        ),
        Field(
            "args",
            WORDS,
            "Replaces the image's cmd.",
            "container.args",
            aliases=("cmd",),
        ),
        Field(
            "env",
            OneOf(
                "a mapping of names to strings, or a list of KEY=VALUE",
                render=_render_env,
                map=MapOf(TEXT, "a mapping of names to strings", _env_key, _env_map),
                list=ListOf(TEXT, "a list of KEY=VALUE"),
            ),
            "Environment variables, over the image's.",
            "container.env",
            aliases=("environment",),
        ),
        Field(
            "workdir",
            STRING,
            "Working directory; absolute.",
            "container.workdir",
            aliases=("working_dir", "workingDir"),
        ),
        Field(
            "hostname",
            STRING,
            "Hostname; default <service>.<slot>.",
            "container.hostname",
        ),
        Field(
            "user",
            TEXT,
            'uid[:gid] the process runs as, e.g. "1000:1000".',
            "container.user",
        ),
        Field(
            "replicas",
            Scalar("an integer >= 0", _integer(0, UINT64_MAX)),
            "Number of tasks to run.",
            "replicas",
            default=1,
            always=True,
        ),
        _MODE,
        _PLACEMENT,
        Field(
            "resources",
            Obj((_resources("limits", True), _resources("reservations", False))),
            "CPU, memory and process limits and reservations.",
        ),
        _RESTART_POLICY,
        _HEALTHCHECK,
        _update_field(
            "update",
            "How a changed spec replaces the tasks: a rolling update, batch by batch.",
        ),
        _update_field(
            "rollback",
            "The same settings for rollbacks (automatic, or `orch rollback`).",
        ),
        Field(
            "networks",
            ListOf(_NETWORK_ITEM, "a list of networks"),
            "Networks to join; default [bridge]. host and none must be alone.",
            "networks",
        ),
        Field(
            "ports",
            ListOf(_PORT_ITEM, "a list of ports"),
            "Ports published on the node that runs each task; a port taken on a node keeps "
            "other tasks publishing it off that node.",
            "ports",
        ),
        Field(
            "stop_grace_period",
            DURATION,
            "SIGTERM to SIGKILL; default 10s.",
            "container.stop_grace_period",
        ),
        Field(
            "stop_signal",
            Scalar("a signal name like SIGTERM", _signal),
            "Signal that asks the process to stop; default SIGTERM.",
            "container.stop_signal",
        ),
        Field("labels", LABELS, "Labels set on the container.", "container.labels"),
    )
)

SERVICE = Obj(
    (*_HEADER, _metadata("service"), Field("spec", SERVICE_SPEC, "What to run and how many."))
)

NETWORK_SPEC = Obj(
    (
        Field("driver", STRING, "Network driver: overlay.", "driver", default="overlay"),
        Field(
            "subnet",
            STRING,
            "IPv4 CIDR in a private range, /29 or larger; default: from the cluster pool.",
            "subnet",
        ),
    )
)

NETWORK = Obj((*_HEADER, _metadata("network"), Field("spec", NETWORK_SPEC, "How it is built.")))

SCHEMAS: dict[str, Obj] = {"Service": SERVICE, "Network": NETWORK}
SPEC_TYPES: dict[str, type] = {
    "Service": specs_pb2.ServiceSpec,
    "Network": specs_pb2.NetworkSpec,
}


def iter_fields(kind: str) -> Iterator[tuple[str, Field]]:
    """Every field of ``kind`` with its path ("spec.networks[].aliases"), for `orch explain`."""

    def walk(obj: Obj, prefix: str) -> Iterator[tuple[str, Field]]:
        for f in obj.fields:
            path = f"{prefix}.{f.name}" if prefix else f.name
            yield path, f
            yield from walk_type(f.type, path)

    def walk_type(typ: Type, path: str) -> Iterator[tuple[str, Field]]:
        if isinstance(typ, Obj):
            yield from walk(typ, path)
        elif isinstance(typ, ListOf):
            yield from walk_type(typ.item, path + "[]")
        elif isinstance(typ, OneOf):
            for alt in (typ.scalar, typ.list, typ.map):
                if alt is not None:
                    yield from walk_type(alt, path)

    yield from walk(SCHEMAS[kind], "")
