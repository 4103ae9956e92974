"""The value rules of service and network specs, checked on the protobuf.

There is one set of rules, and it lives here: the manifest loader runs these checks on
the specs it builds (and attaches file:line), and the manager runs them again on every
Apply because other clients may not use the loader. What the loader checks by itself is
only what cannot survive into a protobuf: YAML syntax, unknown fields, wrong types.

Problems name the manifest field ("spec.resources.limits.memory"), not the protobuf one
(resources.limits.memory_bytes), because users read them and that is what they wrote.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence

from google.protobuf.duration_pb2 import Duration

from orch import model
from orch import placement as placement_rules
from orch.manifests import limits
from orch.manifests.limits import MAX_NAME
from orch.manifests.problems import Problem, join_index, join_key
from orch.manifests.units import DURATION_ACCEPTED, cpus_text, format_duration, size_text
from orch.proto import specs_pb2, types_pb2

MIN_MEMORY_LIMIT = 4 * 1024 * 1024
"""Docker's floor: below this a container is killed before its process starts."""
MIN_NANO_CPUS = 10_000_000
"""0.01 CPU: the smallest CFS quota (1ms per 100ms period) a cgroup accepts, for limits."""
SOLO_NETWORKS = (model.HOST, model.NONE)
"""Modes that replace the container's network entirely, so they cannot be combined."""
NETWORK_DRIVERS = ("overlay",)
PRIVATE_RANGES = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
MAX_SUBNET_PREFIX = 29
PROTOCOLS = ("tcp", "udp")
PORT_MODES = ("host",)
MAX_PORT = 65535
HTTP_SCHEMES = ("http", "https")
MIN_HEALTH_INTERVAL = 100_000_000
"""100ms: a typo guard; probing more often costs the node CPU and measures nothing new."""
RESERVED_ENV_PREFIX = "ORCH_"
"""The agent sets ORCH_TASK_ID, ORCH_SERVICE, ORCH_SLOT and ORCH_NODE in every container."""
SIGNALS = (
    "SIGHUP SIGINT SIGQUIT SIGILL SIGTRAP SIGABRT SIGBUS SIGFPE SIGKILL SIGUSR1 SIGSEGV "
    "SIGUSR2 SIGPIPE SIGALRM SIGTERM SIGSTKFLT SIGCHLD SIGCONT SIGSTOP SIGTSTP SIGTTIN "
    "SIGTTOU SIGURG SIGXCPU SIGXFSZ SIGVTALRM SIGPROF SIGWINCH SIGIO SIGPWR SIGSYS"
).split()
"""Linux signal names in number order (SIGHUP = 1), as the OCI runtimes accept them."""

NAME_ACCEPTED = (
    "a DNS label: lowercase letters, digits and '-', starting and ending with a letter "
    "or digit, at most 63 characters"
)
IMAGE_ACCEPTED = "host[:port]/name[:tag][@digest] or oci:/absolute/path[:tag]"
LABEL_KEY_ACCEPTED = "letters, digits, '.', '_', '-' and '/', starting and ending alphanumeric"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_HOSTNAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?")
_USER = re.compile(r"\d+(:\d+)?")
# The distribution/reference grammar, simplified: [domain[:port]/]path[:tag][@digest].
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::\d+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def validate_service_spec(spec: specs_pb2.ServiceSpec) -> list[str]:
    """Every rule ``spec`` breaks, one "FIELD.PATH: message (accepted: ...)" line each."""
    return [str(p) for p in check_service(spec)]


def validate_network_spec(spec: specs_pb2.NetworkSpec) -> list[str]:
    """Every rule ``spec`` breaks, one "FIELD.PATH: message (accepted: ...)" line each."""
    return [str(p) for p in check_network(spec)]


def scale_problems(replicas: Mapping[str, int]) -> list[str]:
    """The problems of a scale request (service name -> replicas), one line each: what
    `orch scale` checks before sending and the manager before it reads anything."""
    problems: list[Problem] = []
    for name, count in sorted(replicas.items()):
        named = check_name(name, "service name")
        problems += named or limits.replicas_problems(count, join_key("replicas", name))
    return [str(p) for p in problems]


def check_service(spec: specs_pb2.ServiceSpec) -> list[Problem]:
    """The problems of a service spec as records, for callers that attach positions."""
    c = spec.container
    problems = check_name(spec.name, "metadata.name")
    problems += spec_size_problems(spec)
    problems += label_problems(spec.labels, "metadata.labels")
    problems += _image(c.image)
    problems += _argv_size(c.command, "spec.command", limits.MAX_COMMAND_BYTES)
    problems += _argv_size(c.args, "spec.args", limits.MAX_COMMAND_BYTES)
    if c.command and not c.command[0]:
        problems.append(Problem("spec.command[0]", "the program to run cannot be empty"))
    problems += _env(c.env)
    problems += limits.too_long(c.workdir, limits.MAX_PATH, "spec.workdir")
    if c.workdir and not c.workdir.startswith("/"):
        problems.append(Problem("spec.workdir", f"expected an absolute path, got {c.workdir!r}"))
    if c.hostname and not (len(c.hostname) <= MAX_NAME and _HOSTNAME.fullmatch(c.hostname)):
        problems.append(
            Problem("spec.hostname", f"invalid hostname {c.hostname!r}", "DNS labels joined by '.'")
        )
    if c.user and not _USER.fullmatch(c.user):
        problems.append(
            Problem("spec.user", f"invalid user {c.user!r}", 'uid[:gid], e.g. "1000:1000"')
        )
    problems += _duration(c, "stop_grace_period", "spec.stop_grace_period")
    if c.stop_signal and c.stop_signal not in SIGNALS:
        problems.append(
            Problem("spec.stop_signal", f"unknown signal {c.stop_signal!r}", "a name like SIGTERM")
        )
    problems += label_problems(c.labels, "spec.labels")
    problems += limits.replicas_problems(spec.replicas, "spec.replicas")
    problems += _resources(spec.resources)
    problems += _restart_policy(spec.restart_policy)
    if c.HasField("healthcheck"):
        problems += _healthcheck(c.healthcheck)
    for name in ("update", "rollback"):
        if spec.HasField(name):
            problems += _update_config(getattr(spec, name), f"spec.{name}")
    problems += limits.too_many(spec.networks, limits.MAX_NETWORKS, "spec.networks", "networks")
    problems += limits.too_many(spec.ports, limits.MAX_PORTS, "spec.ports", "ports")
    problems += _attachments(spec.networks)
    problems += _ports(spec.ports, [n.target for n in spec.networks])
    problems += _mode_and_placement(spec)
    return problems


def check_network(spec: specs_pb2.NetworkSpec) -> list[Problem]:
    """The problems of a network spec as records, for callers that attach positions."""
    problems = check_name(spec.name, "metadata.name")
    problems += spec_size_problems(spec)
    if spec.name in model.BUILTIN_NETWORKS:
        msg = f"{spec.name!r} is a built-in network mode"
        problems.append(Problem("metadata.name", msg, "any other name"))
    problems += label_problems(spec.labels, "metadata.labels")
    if spec.driver and spec.driver not in NETWORK_DRIVERS:
        msg = f"unknown driver {spec.driver!r}"
        problems.append(Problem("spec.driver", msg, ", ".join(NETWORK_DRIVERS)))
    if spec.subnet:
        problems += _subnet(spec.subnet)
    return problems


def check_name(name: str, path: str) -> list[Problem]:
    """The DNS-label rule of service and network names, with a corrected suggestion."""
    if not name:
        return [Problem(path, "required", NAME_ACCEPTED)]
    if len(name) > 4 * MAX_NAME:  # too long to echo with a suggestion on one line
        return limits.too_long(name, MAX_NAME, path)
    if len(name) <= MAX_NAME and _DNS_LABEL.fullmatch(name):
        return []
    message = f"invalid name {name!r}"
    fixed = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:MAX_NAME].rstrip("-")
    if fixed and fixed != name:
        message += f"; did you mean {fixed!r}?"
    return [Problem(path, message, NAME_ACCEPTED)]


def spec_size_problems(spec: specs_pb2.ServiceSpec | specs_pb2.NetworkSpec) -> list[Problem]:
    """The whole spec, encoded, within MAX_SPEC_BYTES (what no single field cap bounds:
    many ports, networks, constraints...)."""
    return limits.too_large(spec.ByteSize(), limits.MAX_SPEC_BYTES, "spec (encoded)")


def apply_size_problems(
    specs: Iterable[specs_pb2.ServiceSpec | specs_pb2.NetworkSpec],
) -> list[str]:
    """All the specs of one apply within MAX_APPLY_BYTES: one etcd transaction."""
    size = sum(s.ByteSize() for s in specs)
    return [str(p) for p in limits.too_large(size, limits.MAX_APPLY_BYTES, "apply (encoded)")]


def label_problems(labels: Mapping[str, str], path: str) -> list[Problem]:
    """Label keys and values: count, sizes, key syntax, no control characters in values.
    The rule of service, network and node labels."""
    problems = limits.too_many(labels, limits.MAX_LABELS, path, "labels")
    for key, value in sorted(labels.items()):  # protobuf maps have no stable order
        where = join_key(path, key[: limits.MAX_LABEL_KEY])
        if len(key) > limits.MAX_LABEL_KEY:
            problems += limits.too_long(key, limits.MAX_LABEL_KEY, f"{path} (a key)")
        elif not _LABEL_KEY.fullmatch(key):
            problems.append(Problem(where, f"invalid label key {key!r}", LABEL_KEY_ACCEPTED))
        elif len(value) > limits.MAX_LABEL_VALUE:
            problems += limits.too_long(value, limits.MAX_LABEL_VALUE, where)
        elif any(ord(c) < 32 or ord(c) == 127 for c in value):
            problems.append(Problem(where, "the value holds a control character"))
    return problems


def label_key_problems(keys: Iterable[str], path: str) -> list[Problem]:
    """Keys alone (labels to remove): the key rule of ``label_problems``."""
    return label_problems(dict.fromkeys(keys, ""), path)


def node_label_problems(add: Mapping[str, str], remove: Iterable[str]) -> list[str]:
    """One line per bad label of a node update (`orch node label`, UpdateNode): the
    label rule of services and networks."""
    problems = label_problems(add, "add_labels")
    problems += label_key_problems(remove, "remove_labels")
    return [str(p) for p in problems]


def _argv_size(argv: Sequence[str], path: str, max_bytes: int) -> list[Problem]:
    """A command line bounded in arguments and bytes."""
    problems = limits.too_many(argv, limits.MAX_ARGS, path, "arguments")
    return problems + limits.too_big(argv, max_bytes, path)


def _image(image: str) -> list[Problem]:
    if not image:
        return [Problem("spec.image", "required: the image to run", IMAGE_ACCEPTED)]
    if image.startswith("oci:"):
        path = image[len("oci:") :]
        if path.startswith("/") and len(path) > 1 and not any(ch.isspace() for ch in path):
            return []
        return [Problem("spec.image", f"invalid OCI layout reference {image!r}", IMAGE_ACCEPTED)]
    if len(image) <= 512 and _IMAGE.fullmatch(image):
        return []
    message = f"invalid image reference {image!r}"
    name = image.split("@")[0]
    if name != name.lower() and _IMAGE.fullmatch(_lower_path(image)):
        message += "; repository names must be lowercase"
    return [Problem("spec.image", message, IMAGE_ACCEPTED)]


def _lower_path(image: str) -> str:
    """``image`` with the repository path lowercased (the registry host may be mixed case)."""
    head, sep, tail = image.partition("/")
    if sep and ("." in head or ":" in head or head == "localhost"):
        return head + "/" + tail.lower()
    return image.lower()


def _env(env: Iterable[str]) -> list[Problem]:
    env = list(env)
    problems = limits.too_many(env, limits.MAX_ENV, "spec.env", "entries")
    problems += limits.too_big(env, limits.MAX_ENV_BYTES, "spec.env")
    if problems:  # too much to check (and report) entry by entry
        return problems
    seen: dict[str, int] = {}
    for index, item in enumerate(env):
        path = join_index("spec.env", index)
        key, sep, _ = item.partition("=")
        if not sep or not key:
            problems.append(Problem(path, f"expected KEY=VALUE, got {item!r}"))
        elif "\0" in item:
            problems.append(Problem(path, f"{key}: contains a NUL byte"))
        elif key.startswith(RESERVED_ENV_PREFIX):
            msg = f"{key}: {RESERVED_ENV_PREFIX}* variables are set by the agent"
            problems.append(Problem(path, msg, f"a name not starting with {RESERVED_ENV_PREFIX}"))
        elif key in seen:
            msg = f"{key} is set twice (first at spec.env[{seen[key]}])"
            problems.append(Problem(path, msg))
        else:
            seen[key] = index
    return problems


def _duration(message: object, field: str, path: str) -> list[Problem]:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return []
    duration: Duration = getattr(message, field)
    nanos = duration.ToNanoseconds()
    if nanos < 0:
        return [Problem(path, f"expected a duration >= 0, got {format_duration(nanos)}")]
    return []


def _resources(resources: types_pb2.ResourceRequirements) -> list[Problem]:
    problems: list[Problem] = []
    base = "spec.resources"
    for kind in ("limits", "reservations"):
        r: types_pb2.Resources = getattr(resources, kind)
        cpus, memory, pids = f"{base}.{kind}.cpus", f"{base}.{kind}.memory", f"{base}.{kind}.pids"
        if r.nano_cpus < 0:
            problems.append(
                Problem(cpus, f"expected a CPU amount >= 0, got {cpus_text(r.nano_cpus)}")
            )
        elif kind == "limits" and 0 < r.nano_cpus < MIN_NANO_CPUS:
            msg = f"{cpus_text(r.nano_cpus)} CPU is below the smallest a cgroup can enforce"
            problems.append(Problem(cpus, msg, "0.01 or more"))
        if r.memory_bytes < 0:
            problems.append(Problem(memory, f"expected a size >= 0, got {r.memory_bytes}"))
        if r.pids < 0:
            problems.append(Problem(pids, f"expected an integer >= 0, got {r.pids}"))
    limits, reservations = resources.limits, resources.reservations
    if 0 < limits.memory_bytes < MIN_MEMORY_LIMIT:
        msg = f"memory limit {size_text(limits.memory_bytes)} is below the minimum"
        problems.append(Problem(f"{base}.limits.memory", msg, "4Mi or more"))
    if reservations.pids:
        msg = "pids can only be limited, not reserved"
        problems.append(Problem(f"{base}.reservations.pids", msg, "set it under limits"))
    if 0 < limits.nano_cpus < reservations.nano_cpus:
        msg = (
            f"reservation of {cpus_text(reservations.nano_cpus)} CPU exceeds the limit of "
            f"{cpus_text(limits.nano_cpus)}"
        )
        problems.append(Problem(f"{base}.reservations.cpus", msg, "a reservation <= the limit"))
    if 0 < limits.memory_bytes < reservations.memory_bytes:
        msg = (
            f"reservation of {size_text(reservations.memory_bytes)} exceeds the limit of "
            f"{size_text(limits.memory_bytes)}"
        )
        problems.append(Problem(f"{base}.reservations.memory", msg, "a reservation <= the limit"))
    return problems


def _restart_policy(policy: types_pb2.RestartPolicy) -> list[Problem]:
    base = "spec.restart_policy"
    problems: list[Problem] = []
    if policy.condition not in types_pb2.RestartCondition.values():
        problems.append(Problem(f"{base}.condition", f"unknown condition {policy.condition}"))
    for field in ("delay", "window", "max_delay"):
        problems += _duration(policy, field, f"{base}.{field}")
    if policy.HasField("delay") and policy.HasField("max_delay"):
        delay, max_delay = policy.delay.ToNanoseconds(), policy.max_delay.ToNanoseconds()
        if 0 <= max_delay < delay:
            msg = (
                f"max_delay {format_duration(max_delay)} is shorter than delay "
                f"{format_duration(delay)}"
            )
            problems.append(Problem(f"{base}.max_delay", msg, "a max_delay >= delay"))
    return problems


def _update_config(cfg: specs_pb2.UpdateConfig, base: str) -> list[Problem]:
    problems: list[Problem] = []
    if cfg.order not in specs_pb2.UpdateConfig.Order.values():
        problems.append(Problem(f"{base}.order", f"unknown order {cfg.order}"))
    if cfg.failure_action not in specs_pb2.UpdateConfig.FailureAction.values():
        msg = f"unknown failure action {cfg.failure_action}"
        problems.append(Problem(f"{base}.failure_action", msg))
    if not 0 <= cfg.max_failure_ratio <= 1:
        msg = f"expected a number from 0 to 1, got {cfg.max_failure_ratio:g}"
        problems.append(Problem(f"{base}.max_failure_ratio", msg))
    for field in ("delay", "monitor"):
        problems += _duration(cfg, field, f"{base}.{field}")
    return problems


def _healthcheck(check: specs_pb2.HealthCheck) -> list[Problem]:
    base = "spec.healthcheck"
    problems: list[Problem] = []
    kind = check.WhichOneof("probe")
    if kind is None:
        problems.append(Problem(base, "no probe given", "exactly one of exec, http, tcp"))
    elif kind == "exec" and not (check.exec.command and check.exec.command[0]):
        problems.append(Problem(f"{base}.exec", "the command cannot be empty"))
    elif kind == "exec":
        path, cap = f"{base}.exec", limits.MAX_HEALTH_COMMAND_BYTES
        problems += _argv_size(check.exec.command, path, cap)
    elif kind in ("http", "tcp"):
        port = getattr(check, kind).port
        if not 1 <= port <= MAX_PORT:
            msg = f"expected a port 1-{MAX_PORT}, got {port}"
            problems.append(Problem(f"{base}.{kind}.port", msg))
    if kind == "http":
        problems += _http_probe(check.http, f"{base}.http")
    accepted = f"{DURATION_ACCEPTED}; default 30s"
    if check.HasField("interval") and check.interval.ToNanoseconds() < MIN_HEALTH_INTERVAL:
        msg = f"expected at least 100ms, got {format_duration(check.interval.ToNanoseconds())}"
        problems.append(Problem(f"{base}.interval", msg, accepted))
    if check.HasField("timeout") and check.timeout.ToNanoseconds() <= 0:
        msg = f"expected a duration > 0, got {format_duration(check.timeout.ToNanoseconds())}"
        problems.append(Problem(f"{base}.timeout", msg, accepted))
    problems += _duration(check, "start_period", f"{base}.start_period")
    return problems


def _http_probe(http: specs_pb2.HttpProbe, path: str) -> list[Problem]:
    problems = limits.too_long(http.path, limits.MAX_PATH, f"{path}.path")
    if problems:
        return problems
    if http.path and not http.path.startswith("/"):
        msg = f"expected a path starting with '/', got {http.path!r}"
        problems.append(Problem(f"{path}.path", msg, f"e.g. /{http.path.lstrip('/')}"))
    elif any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in http.path):
        msg = f"the path {http.path!r} contains spaces or control characters"
        problems.append(Problem(f"{path}.path", msg, "a URL path; escape spaces as %20"))
    if http.scheme and http.scheme not in HTTP_SCHEMES:
        msg = f"unknown scheme {http.scheme!r}"
        problems.append(Problem(f"{path}.scheme", msg, ", ".join(HTTP_SCHEMES)))
    return problems


def _mode_and_placement(spec: specs_pb2.ServiceSpec) -> list[Problem]:
    """Constraints and spread keys parse (orch/placement.py's grammar, the scheduler's);
    settings that mean nothing for a global service are refused rather than ignored."""
    base = "spec.placement"
    problems: list[Problem] = []
    for field in ("constraints", "preferences"):
        rules = getattr(spec.placement, field)
        problems += limits.too_many(rules, limits.MAX_PLACEMENT_RULES, f"{base}.{field}", field)
    for index, text in enumerate(spec.placement.constraints):
        try:
            placement_rules.parse_constraint(text)
        except placement_rules.PlacementError as exc:
            path = join_index(f"{base}.constraints", index)
            problems.append(Problem(path, exc.message, exc.accepted))
    for index, pref in enumerate(spec.placement.preferences):
        path = join_index(f"{base}.preferences", index) + ".spread"
        if not pref.spread:
            accepted = placement_rules.SPREAD_ACCEPTED
            problems.append(Problem(path, "required: the node attribute to spread over", accepted))
            continue
        try:
            placement_rules.parse_spread(pref.spread)
        except placement_rules.PlacementError as exc:
            problems.append(Problem(path, exc.message, exc.accepted))
    if spec.mode not in specs_pb2.ServiceMode.values():
        problems.append(Problem("spec.mode", f"unknown mode {spec.mode}", "replicated, global"))
    if spec.mode != specs_pb2.GLOBAL:
        return problems
    per_node = "a global service runs one task on every eligible node"
    if spec.replicas > 1:
        msg = f"replicas ({spec.replicas}) does not apply to a global service; {per_node}"
        problems.append(Problem("spec.replicas", msg, "leave replicas out, or mode: replicated"))
    if spec.placement.max_replicas_per_node:
        msg = f"max_replicas_per_node does not apply to a global service; {per_node}"
        accepted = "leave it out, or mode: replicated"
        problems.append(Problem(f"{base}.max_replicas_per_node", msg, accepted))
    if spec.placement.preferences:
        msg = f"spread preferences do not apply to a global service; {per_node}"
        accepted = "constraints choose its nodes"
        problems.append(Problem(f"{base}.preferences", msg, accepted))
    return problems


def _attachments(networks: Iterable[specs_pb2.NetworkAttachmentConfig]) -> list[Problem]:
    problems: list[Problem] = []
    attachments = list(networks)
    seen: set[str] = set()
    for index, net in enumerate(attachments):
        path = join_index("spec.networks", index)
        problems += check_name(net.target, path)
        if net.target in seen:
            problems.append(Problem(path, f"network {net.target!r} is listed twice"))
        seen.add(net.target)
        if net.target in SOLO_NETWORKS and len(attachments) > 1:
            msg = f"{net.target!r} replaces the container's network, so it must be the only one"
            problems.append(Problem(path, msg, f"{net.target} alone, or other networks"))
        if net.target in SOLO_NETWORKS and net.aliases:
            msg = f"network mode {net.target!r} takes no aliases"
            problems.append(Problem(join_key(path, "aliases"), msg))
        problems += _aliases(net.aliases, join_key(path, "aliases"))
    return problems


def port_key(port: specs_pb2.PortConfig) -> tuple[int, str]:
    """What must be unique on a node: the published port and its protocol."""
    return port.published, port.protocol or "tcp"


def port_text(key: tuple[int, str]) -> str:
    return f"{key[0]}/{key[1]}"


def port_clashes(specs: Iterable[specs_pb2.ServiceSpec]) -> list[tuple[int, int, tuple[int, str]]]:
    """(index of a service, index of an earlier one, port) for each published port two
    services of one apply both ask for. The same service twice is _ports' business."""
    first: dict[tuple[int, str], int] = {}
    clashes = []
    for index, spec in enumerate(specs):
        for key in dict.fromkeys(port_key(p) for p in spec.ports if p.published):
            if key in first:
                clashes.append((index, first[key], key))
            else:
                first[key] = index
    return clashes


def _ports(ports: Iterable[specs_pb2.PortConfig], networks: list[str]) -> list[Problem]:
    problems: list[Problem] = []
    ports = list(ports)
    seen: dict[tuple[int, str], int] = {}
    port_range = f"1-{MAX_PORT}"
    for index, port in enumerate(ports):
        path = join_index("spec.ports", index)
        if not 1 <= port.target <= MAX_PORT:
            msg = f"expected a port {port_range}, got {port.target}"
            problems.append(Problem(join_key(path, "target"), msg))
        if port.published == 0:
            msg = "required: the port on the node (mode host publishes a fixed port)"
            problems.append(Problem(join_key(path, "published"), msg, f"a port {port_range}"))
        elif port.published > MAX_PORT:
            msg = f"expected a port {port_range}, got {port.published}"
            problems.append(Problem(join_key(path, "published"), msg))
        if port.protocol and port.protocol not in PROTOCOLS:
            msg = f"unknown protocol {port.protocol!r}"
            problems.append(Problem(join_key(path, "protocol"), msg, ", ".join(PROTOCOLS)))
        if port.mode == "ingress":
            msg = "mode ingress (the port on every node, a routing mesh) is not built yet"
            problems.append(Problem(join_key(path, "mode"), msg, "host"))
        elif port.mode and port.mode not in PORT_MODES:
            msg = f"unknown mode {port.mode!r}"
            problems.append(Problem(join_key(path, "mode"), msg, ", ".join(PORT_MODES)))
        key = port_key(port)
        if port.published and key in seen:
            msg = f"published port {port_text(key)} is given twice (also spec.ports[{seen[key]}])"
            problems.append(Problem(path, msg))
        seen.setdefault(key, index)
    # host or none combined with others is already a problem of spec.networks.
    if ports and len(networks) == 1 and networks[0] in SOLO_NETWORKS:
        msg = (
            f"published ports need a network on which the container has its own address; "
            f"network mode {networks[0]!r} has none"
        )
        problems.append(Problem("spec.ports", msg, "bridge (the default) or an overlay network"))
    return problems


def _aliases(aliases: Sequence[str], path: str) -> list[Problem]:
    problems = limits.too_many(aliases, limits.MAX_ALIASES, path, "aliases")
    seen: set[str] = set()
    for index, alias in enumerate(aliases):
        item = join_index(path, index)
        if not (len(alias) <= 253 and _HOSTNAME.fullmatch(alias)):
            msg = f"invalid alias {alias!r}"
            problems.append(Problem(item, msg, "lowercase DNS names, labels joined by '.'"))
        elif alias in seen:
            problems.append(Problem(item, f"alias {alias!r} is listed twice"))
        seen.add(alias)
    return problems


def _subnet(subnet: str) -> list[Problem]:
    path = "spec.subnet"
    accepted = (
        "an IPv4 CIDR in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 "
        f"with a prefix of /{MAX_SUBNET_PREFIX} or shorter"
    )
    try:
        network = ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        return [Problem(path, f"invalid CIDR {subnet!r}", accepted)]
    if "/" not in subnet:
        return [Problem(path, f"{subnet!r} has no prefix length", accepted)]
    if network.version != 4:
        return [Problem(path, f"{subnet!r} is not IPv4", accepted)]
    if str(network) != subnet:
        return [Problem(path, f"{subnet!r} has host bits set; did you mean {network}?", accepted)]
    if not any(network.subnet_of(r) for r in PRIVATE_RANGES):  # type: ignore[arg-type]
        return [Problem(path, f"{subnet} is not a private range", accepted)]
    if network.prefixlen > MAX_SUBNET_PREFIX:
        return [Problem(path, f"{subnet} is too small for tasks and a gateway", accepted)]
    return []
