"""Named contexts: the CLI's config file (``~/.config/orch/config.yaml``, or ``$ORCH_CONFIG``).

A context names a cluster: its manager addresses and the directory of its TLS material
(stored for the identity work; only ``orch context`` reads it today). The file::

    current: prod
    contexts:
      prod: {managers: [10.0.0.1:7701, 10.0.0.2:7701], tls_dir: /etc/orch/prod}
      dev: {managers: [10.99.0.1:7701]}

It is read with positions (manifests/yamlpos.py) so that a mistake is reported as one line
with file:line, and written whole through a temporary file and a rename, 0600 in a 0700
directory, since it will point at credentials.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orch.cli.addresses import parse_addresses
from orch.errors import OrchError
from orch.manifests.yamlpos import PosDict, PosList, parse_documents

ENV_CONFIG = "ORCH_CONFIG"
MAX_CONFIG_BYTES = 1 << 20
"""A config file names a few clusters; anything larger is a mistake (or not ours)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_CONTEXT_KEYS = ("managers", "tls_dir")


@dataclass(frozen=True)
class ClusterContext:
    name: str
    managers: tuple[str, ...]
    tls_dir: str = ""

    def __post_init__(self) -> None:
        if not self.managers:  # every way of making one checks this; a client needs one
            raise OrchError(f"context {self.name}: expected at least one manager HOST:PORT")


@dataclass
class Config:
    """The whole file: which context is current and every context by name."""

    path: Path
    current: str = ""
    contexts: dict[str, ClusterContext] = field(default_factory=dict)

    def current_context(self) -> ClusterContext | None:
        return self.contexts.get(self.current) if self.current else None


def config_path(env: Mapping[str, str]) -> Path:
    """``$ORCH_CONFIG``, else ``$HOME/.config/orch/config.yaml``."""
    value = env.get(ENV_CONFIG, "").strip()
    if value:
        return Path(value)
    home = env.get("HOME", "").strip()
    return (Path(home) if home else Path.home()) / ".config" / "orch" / "config.yaml"


def check_name(name: str) -> str:
    """A context name as accepted on the command line and in the file."""
    if not _NAME.fullmatch(name):
        raise OrchError(
            f"context name {name!r}: expected letters, digits, '.', '_' or '-' "
            "(at most 63, starting with a letter or digit)"
        )
    return name


def load(env: Mapping[str, str]) -> Config:
    """The config file's contexts; an empty Config when the file does not exist."""
    path = config_path(env)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return Config(path)
    except OSError as exc:
        raise OrchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise OrchError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a config file")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise OrchError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    return _parse(text, path)


def _parse(text: str, path: Path) -> Config:
    documents, problems = parse_documents(text, str(path))
    if problems:
        raise OrchError(str(problems[0]))
    if not documents:
        return Config(path)
    if len(documents) > 1:
        raise OrchError(f"{path}:{documents[1].mark.line}: expected one YAML document")
    root = documents[0].root
    where = f"{path}:{documents[0].mark.line}"
    if not isinstance(root, PosDict):
        raise OrchError(f"{where}: expected a mapping with 'current' and 'contexts'")
    _only_keys(root, ("current", "contexts"), path)
    contexts_node = root.get("contexts")
    if contexts_node is None:
        contexts_node = PosDict(documents[0].mark)
    if not isinstance(contexts_node, PosDict):
        raise OrchError(f"{_at(path, root, 'contexts')}: expected a mapping of name -> context")
    contexts = {
        name: _context(name, value, path, contexts_node) for name, value in contexts_node.items()
    }
    current = root.get("current") or ""
    if not isinstance(current, str):
        raise OrchError(f"{_at(path, root, 'current')}: expected a context name")
    if current and current not in contexts:
        # Falling through to the next source would silently reach another cluster.
        known = ", ".join(sorted(contexts)) or "none"
        raise OrchError(f"{_at(path, root, 'current')}: no context {current!r} (contexts: {known})")
    return Config(path, current, contexts)


def _context(name: str, value: Any, path: Path, parent: PosDict) -> ClusterContext:
    where = _at(path, parent, name)
    if not _NAME.fullmatch(name):
        raise OrchError(f"{where}: {name!r} is not a context name")
    if not isinstance(value, PosDict):
        raise OrchError(f"{where}: context {name}: expected a mapping with 'managers'")
    _only_keys(value, _CONTEXT_KEYS, path)
    managers = value.get("managers")
    if isinstance(managers, str):
        managers = [managers]
    if not isinstance(managers, PosList | list) or not all(isinstance(m, str) for m in managers):
        raise OrchError(f"{where}: context {name}: managers: expected a list of HOST:PORT")
    try:
        addresses = parse_addresses(",".join(managers), source=f"context {name}")
    except OrchError as exc:
        raise OrchError(f"{where}: {str(exc).splitlines()[0]}") from exc
    if not addresses:
        raise OrchError(f"{where}: context {name}: managers: expected at least one HOST:PORT")
    tls_dir = value.get("tls_dir") or ""
    if not isinstance(tls_dir, str):
        raise OrchError(f"{_at(path, value, 'tls_dir')}: expected a directory path")
    return ClusterContext(name, tuple(addresses), tls_dir)


def _only_keys(node: PosDict, accepted: tuple[str, ...], path: Path) -> None:
    for key in node:
        if key not in accepted:
            raise OrchError(
                f"{_at(path, node, key)}: unknown key {key!r} (accepted: {', '.join(accepted)})"
            )


def _at(path: Path, node: PosDict, key: str) -> str:
    mark = node.key_marks.get(key, node.mark)
    return f"{path}:{mark.line}"


def save(config: Config) -> None:
    """Write the whole file: 0600, its directory 0700 when we create it, replaced by a
    rename so that a reader never sees half a file."""
    path = config.path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body: dict[str, Any] = {"current": config.current, "contexts": {}}
    for name, ctx in sorted(config.contexts.items()):
        entry: dict[str, Any] = {"managers": list(ctx.managers)}
        if ctx.tls_dir:
            entry["tls_dir"] = ctx.tls_dir
        body["contexts"][name] = entry
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OrchError(f"cannot write {path}: {exc.strerror or exc}") from exc


def put(env: Mapping[str, str], context: ClusterContext, *, make_current: bool) -> Config:
    """Add or replace one context (and maybe make it current), keeping the others."""
    config = load(env)
    config.contexts[context.name] = context
    if make_current:
        config.current = context.name
    save(config)
    return config
