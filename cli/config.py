"""Where the CLI finds a manager, and the CLI's tunables.

The manager address is looked up in one place, :func:`resolve_manager_addresses`, in this
order: the ``--manager`` flag, the ``ORCH_MANAGER`` environment variable, then the file a
local cluster (``orch dev up``) writes into its state directory. The local cluster and its
tests call the same function, so the CLI and the harness cannot disagree on the lookup.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orch.errors import OrchError, ValidationError
from orch.localcluster.paths import DEFAULT_STATE_DIR, manager_address_file

ENV_MANAGER = "ORCH_MANAGER"
ENV_STATE_DIR = "ORCH_STATE_DIR"

# HOST:PORT where HOST is a name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


@dataclass(frozen=True)
class CliSettings:
    """Tunables of one CLI invocation."""

    timeout: float = 10.0
    """Deadline of each Control API call, in seconds. Not applied to `orch logs -f`."""

    connect_timeout: float = 3.0
    """How long to wait for a connection to one manager before trying the next address.
    A refused connection fails at once; this bounds addresses that drop packets."""


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The local cluster's state directory: ``$ORCH_STATE_DIR`` or /var/lib/orch/dev."""
    env = os.environ if env is None else env
    value = env.get(ENV_STATE_DIR, "").strip()
    return Path(value) if value else DEFAULT_STATE_DIR


def parse_addresses(text: str, *, source: str) -> list[str]:
    """Split ``"h1:p1,h2:p2"`` (commas and/or whitespace) into checked HOST:PORT strings.

    ``source`` names where the text came from, for the error message.
    """
    addresses = [part for part in re.split(r"[,\s]+", text) if part]
    bad = [a for a in addresses if not _valid_address(a)]
    if bad:
        raise ValidationError([f"{source}: {a!r} is not HOST:PORT" for a in bad])
    return addresses


def _valid_address(address: str) -> bool:
    match = _ADDRESS.match(address)
    return match is not None and 0 < int(match.group(1)) < 65536


def resolve_manager_addresses(
    flag: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    state_dir: Path | None = None,
) -> list[str]:
    """The manager addresses to try, in order: ``flag`` > ``$ORCH_MANAGER`` > the local
    cluster's address file (in ``state_dir``, default :func:`default_state_dir`).

    Raises OrchError naming every place looked at when none gives an address, and
    ValidationError when the chosen source holds something that is not HOST:PORT.
    """
    env = os.environ if env is None else env
    if flag is not None and flag.strip():
        return parse_addresses(flag, source="--manager")
    if env.get(ENV_MANAGER, "").strip():
        return parse_addresses(env[ENV_MANAGER], source=ENV_MANAGER)
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
            f"or start a local cluster with `orch dev up` (no addresses in {path})"
        )
    return addresses
