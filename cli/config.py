"""Where the CLI finds a manager, and the CLI's tunables.

The manager address is looked up in one place, :func:`resolve_manager_addresses`, in this
order: the ``--manager`` flag, the ``ORCH_MANAGER`` environment variable, the current
context of the config file (contexts.py), then the file a local cluster (``orch dev up``)
writes into its state directory. The local cluster and its tests call the same function, so the CLI and the harness cannot disagree on the lookup.

The admin credentials (ca.pem, admin.pem, admin-key.pem) are looked up the same way in
:func:`resolve_tls_dir`: ``--tls-dir``, ``ORCH_TLS_DIR``, the current context's
``tls_dir``, then ``tls/`` in the local cluster's state directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orch.cli import contexts
from orch.cli.addresses import parse_addresses
from orch.errors import OrchError
from orch.identity.channels import ADMIN_CERT, ADMIN_KEY, ADMIN_ROOTS, ClientTLS, load_admin_tls
from orch.localcluster.paths import DEFAULT_STATE_DIR, manager_address_file

ENV_MANAGER = "ORCH_MANAGER"
ENV_STATE_DIR = "ORCH_STATE_DIR"
ENV_TLS_DIR = "ORCH_TLS_DIR"


@dataclass(frozen=True)
class CliSettings:
    """Tunables of one CLI invocation."""

    timeout: float = 30.0
    """Deadline of each Control API call, in seconds. Not applied to `orch logs -f`. Above
    what a write may wait in the manager (its catch-up read and its commit, each bounded by
    the Store's 10 s so they wait out an etcd leader election, then up to 5 s for the view
    to show it), so the manager's own answer ("the cluster store (etcd) is unavailable
    ...") comes before the deadline."""

    connect_timeout: float = 3.0
    """How long to wait for a connection to one manager before trying the next address.
    A refused connection fails at once; this bounds addresses that drop packets."""


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The local cluster's state directory: ``$ORCH_STATE_DIR`` or /var/lib/orch/dev."""
    env = os.environ if env is None else env
    value = env.get(ENV_STATE_DIR, "").strip()
    return Path(value) if value else DEFAULT_STATE_DIR


@dataclass(frozen=True)
class ManagerSource:
    """The addresses to try and where they came from (for `orch context current`)."""

    addresses: list[str]
    source: str
    context: str = ""
    """The context's name when the addresses came from one."""


def resolve_manager_addresses(
    flag: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    state_dir: Path | None = None,
) -> list[str]:
    """The manager addresses to try; see :func:`resolve_managers`."""
    return resolve_managers(flag, env=env, state_dir=state_dir).addresses


def resolve_managers(
    flag: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    state_dir: Path | None = None,
) -> ManagerSource:
    """The manager addresses to try, in order: ``flag`` > ``$ORCH_MANAGER`` > the current
    context of the config file (contexts.py) > the local cluster's address file (in
    ``state_dir``, default :func:`default_state_dir`).

    Raises OrchError naming every place looked at when none gives an address, and
    ValidationError when the chosen source holds something that is not HOST:PORT.
    """
    env = os.environ if env is None else env
    if flag is not None and flag.strip():
        return ManagerSource(parse_addresses(flag, source="--manager"), "--manager")
    if env.get(ENV_MANAGER, "").strip():
        return ManagerSource(parse_addresses(env[ENV_MANAGER], source=ENV_MANAGER), ENV_MANAGER)
    config = contexts.load(env)
    current = config.current_context()
    if current is not None:
        source = f"context {current.name} ({config.path})"
        return ManagerSource(list(current.managers), source, current.name)
    path = manager_address_file(state_dir if state_dir is not None else default_state_dir(env))
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise OrchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    addresses = parse_addresses(text, source=str(path)) if text.strip() else []
    if not addresses:
        raise OrchError(
            f"no manager address: pass --manager HOST:PORT, set {ENV_MANAGER}, "
            f"add a context with `orch context add`, "
            f"or start a local cluster with `orch dev up` (no addresses in {path})"
        )
    return ManagerSource(addresses, str(path))


def resolve_tls_dir(flag: str | None = None, *, env: Mapping[str, str] | None = None) -> Path:
    """Where the admin credentials are: ``flag`` > ``$ORCH_TLS_DIR`` > the current
    context's tls_dir > ``<local cluster state dir>/tls``."""
    env = os.environ if env is None else env
    if flag is not None and flag.strip():
        return Path(flag).expanduser()
    if env.get(ENV_TLS_DIR, "").strip():
        return Path(env[ENV_TLS_DIR].strip()).expanduser()
    current = contexts.load(env).current_context()
    if current is not None and current.tls_dir:
        return Path(current.tls_dir).expanduser()
    return default_state_dir(env) / "tls"


def load_cli_tls(directory: Path) -> ClientTLS:
    """The admin credentials in ``directory``, or one line saying how to get some."""
    files = ", ".join((ADMIN_ROOTS, ADMIN_CERT, ADMIN_KEY))
    if not (Path(directory) / ADMIN_KEY).exists():
        raise OrchError(
            f"no admin credentials in {directory} ({files}): pass --tls-dir DIR or set "
            f"{ENV_TLS_DIR}; `orch-manager init --admin-tls-dir DIR` writes them, "
            "`orch ca issue-admin` makes more, `orch dev up` keeps them in "
            f"${ENV_STATE_DIR}/tls"
        )
    return load_admin_tls(directory)
