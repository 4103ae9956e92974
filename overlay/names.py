"""Names of the kernel objects an agent creates.

Every netns and link an agent makes carries its per-agent prefix followed by ``-``, so a
sweep after a crash can find exactly its own leftovers and never touches another agent's
(several agents may share one machine). The prefix may not contain ``-``, which makes
``<prefix>-`` unambiguous: agent ``orch1`` never matches ``orch12-...``.

Interface names are limited to 15 bytes (IFNAMSIZ - 1). A host-side veth is
``<prefix>-<hash>``, the hash (base32 of sha256 over endpoint id, network and a salt)
filling the rest of the 15 bytes, so it is at least 5 characters long. Every other link an
agent names uses a shorter suffix, so it can never be taken for (or collide with) a veth:
the bridge ``<prefix>-br``, and per overlay network a bridge ``<prefix>-o<code>`` and a
VXLAN device ``<prefix>-v<code>``. The code is the VNI written in base32, which is
one-to-one for every VNI when the prefix has at most 7 characters and for VNIs below
32768 with any prefix; only beyond that is it a hash (the driver detects a clash: the
device found then carries another VNI).
"""

from __future__ import annotations

import base64
import hashlib
import re

from orch.errors import ValidationError

IFNAMSIZ = 15
"""Longest interface name the kernel accepts (16 bytes with the terminating NUL)."""

PREFIX_MAX = 9
"""Longest agent prefix: leaves ``-`` plus at least 5 hash characters in a veth name."""

_PREFIX_RE = re.compile(rf"^[a-z][a-z0-9]{{0,{PREFIX_MAX - 1}}}$")
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
"""RFC 4648 base32 digits, lower case: what veth hashes and overlay codes are made of."""
VNI_MAX = (1 << 24) - 1

_ENDPOINT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid agent prefix, else raise ValidationError."""
    if not _PREFIX_RE.match(prefix):
        raise ValidationError(
            f"network prefix {prefix!r}: want 1-{PREFIX_MAX} characters of [a-z0-9], "
            "starting with a letter"
        )
    return prefix


def check_endpoint_id(endpoint_id: str) -> str:
    """Return ``endpoint_id`` if it can name a netns and a state file, else raise."""
    if not _ENDPOINT_RE.match(endpoint_id):
        raise ValidationError(
            f"endpoint id {endpoint_id!r}: want 1-128 characters of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return endpoint_id


def owned_prefix(prefix: str) -> str:
    """The leading string of every netns and link name that agent ``prefix`` owns."""
    return f"{prefix}-"


def netns_name(prefix: str, endpoint_id: str) -> str:
    """The named netns (``/run/netns/<name>``) of one endpoint."""
    return f"{prefix}-{endpoint_id}"


def endpoint_of_netns(prefix: str, name: str) -> str | None:
    """The endpoint id a netns name belongs to, or None if agent ``prefix`` does not own it."""
    head = owned_prefix(prefix)
    if not name.startswith(head) or len(name) == len(head):
        return None
    return name[len(head) :]


def bridge_name(prefix: str) -> str:
    """Default name of the agent's local bridge."""
    return f"{prefix}-br"


def veth_hash_len(prefix: str) -> int:
    """Characters of hash in a host-side veth name for this prefix."""
    return IFNAMSIZ - len(prefix) - 1


def veth_name(prefix: str, endpoint_id: str, network: str, salt: int = 0) -> str:
    """Host-side veth name for ``endpoint_id`` on ``network``.

    Deterministic, so an interrupted attach can be found again; ``salt`` picks another
    name when two endpoints hash alike (the caller knows which names are taken).
    """
    digest = hashlib.sha256(f"{endpoint_id}\0{network}\0{salt}".encode()).digest()
    text = base64.b32encode(digest).decode().lower()
    return f"{prefix}-{text[: veth_hash_len(prefix)]}"


def is_veth_name(prefix: str, name: str) -> bool:
    """True if ``name`` has the shape of a host-side veth that agent ``prefix`` names."""
    head = owned_prefix(prefix)
    rest = name[len(head) :]
    return (
        name.startswith(head)
        and len(rest) == veth_hash_len(prefix)
        and all(c in _B32 for c in rest)
    )


def overlay_code_len(prefix: str) -> int:
    """Characters of code in an overlay device name: one less than the marker leaves
    below a veth hash (3 for a 9-character prefix, 8 for "orch")."""
    return veth_hash_len(prefix) - 2


def overlay_code(prefix: str, vni: int) -> str:
    """The VNI in base32 when it fits the room the prefix leaves, else a hash of it."""
    if not 1 <= vni <= VNI_MAX:
        raise ValidationError(f"VNI {vni}: want 1-{VNI_MAX}")
    width = overlay_code_len(prefix)
    if vni < 32**width:
        digits = []
        for _ in range(width):
            vni, r = divmod(vni, 32)
            digits.append(_B32[r])
        return "".join(reversed(digits))
    digest = hashlib.sha256(f"vni\0{vni}".encode()).digest()
    return base64.b32encode(digest).decode().lower()[:width]


def overlay_bridge_name(prefix: str, vni: int) -> str:
    """The bridge of the overlay network with ``vni`` on agent ``prefix``."""
    return f"{prefix}-o{overlay_code(prefix, vni)}"


def overlay_vxlan_name(prefix: str, vni: int) -> str:
    """The VXLAN device of the overlay network with ``vni`` on agent ``prefix``."""
    return f"{prefix}-v{overlay_code(prefix, vni)}"


def is_overlay_name(prefix: str, name: str) -> bool:
    """True if ``name`` has the shape of an overlay bridge or VXLAN device of ``prefix``."""
    head = owned_prefix(prefix)
    rest = name[len(head) :]
    return (
        name.startswith(head)
        and len(rest) == overlay_code_len(prefix) + 1
        and rest[0] in "ov"
        and all(c in _B32 for c in rest[1:])
    )
