"""Manager addresses as a person writes them: ``HOST:PORT`` lists, checked in one place
for the flag, the environment, the local cluster's file and the contexts file."""

from __future__ import annotations

import re

from orch.errors import ValidationError

# HOST:PORT where HOST is a name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


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
