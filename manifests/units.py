"""Durations, byte sizes and CPU amounts: parse what people write, print it back the same way.

Values are kept as exact integers (nanoseconds, bytes, nano-CPUs), the way the protobuf
stores them, and parsed with ``Decimal`` so "0.1" CPU is exactly 100_000_000 nano-CPUs.
Each ``format_*`` is the inverse of its ``parse_*``: ``parse(format(x)) == x`` for every
value, which the round-trip tests rely on.

Sizes follow Kubernetes: k, M, G, T are powers of 1000 and Ki, Mi, Gi, Ti powers of 1024.
Docker's lowercase "512m" means MiB there but milli-bytes in Kubernetes, so lowercase
m/g/t are refused with a hint instead of guessed.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

NANOS_PER_SECOND = 1_000_000_000
NANO_CPUS_PER_CPU = 1_000_000_000
INT64_MAX = 2**63 - 1
MAX_DURATION_NANOS = 315_576_000_000 * NANOS_PER_SECOND
"""google.protobuf.Duration's range: about 10,000 years."""


class UnitError(ValueError):
    """A value that cannot be read; ``accepted`` says what could."""

    def __init__(self, message: str, accepted: str) -> None:
        super().__init__(message)
        self.message = message
        self.accepted = accepted


def _number(value: int | float | str) -> Decimal | None:
    """An exact Decimal for a YAML number or numeric string; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return Decimal(repr(value))
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _plain(number: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 1.50 -> "1.5", 2E+1 -> "20"."""
    text = f"{number:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# ---- durations -------------------------------------------------------------------------

DURATION_ACCEPTED = 'a duration like "100ms", "5s", "1m30s", "2h", or a number of seconds'
_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": NANOS_PER_SECOND,
    "m": 60 * NANOS_PER_SECOND,
    "h": 3600 * NANOS_PER_SECOND,
}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)"
_DURATION_RE = re.compile(f"(?:{_DURATION_PART})+")


def parse_duration(value: int | float | str) -> int:
    """Nanoseconds in ``value``: Go-style "1m30s", or a number of seconds."""
    if isinstance(value, bool):
        raise UnitError(f"expected a duration, got {str(value).lower()}", DURATION_ACCEPTED)
    seconds = _number(value)
    if seconds is not None:
        total = seconds * NANOS_PER_SECOND
    else:
        text = str(value).strip()
        if not _DURATION_RE.fullmatch(text):
            raise UnitError(f"invalid duration {value!r}", DURATION_ACCEPTED)
        total = sum(
            Decimal(number) * _DURATION_UNITS[unit]
            for number, unit in re.findall(_DURATION_PART, text)
        )
    return _whole(
        total,
        value,
        "duration",
        "is finer than a nanosecond",
        "is too long",
        MAX_DURATION_NANOS,
        DURATION_ACCEPTED,
    )


def format_duration(nanos: int) -> str:
    """ "1h2m3.5s", "1m30s", "100ms", "0s": whole hours and minutes, then seconds."""
    if nanos < 0:
        return "-" + format_duration(-nanos)
    if nanos == 0:
        return "0s"
    if nanos < NANOS_PER_SECOND:
        for unit, size in (("ms", 1_000_000), ("us", 1_000)):
            if nanos >= size:
                return _plain(Decimal(nanos) / size) + unit
        return f"{nanos}ns"
    hours, rest = divmod(nanos, 3600 * NANOS_PER_SECOND)
    minutes, rest = divmod(rest, 60 * NANOS_PER_SECOND)
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if minutes else ""
    if rest:
        text += _plain(Decimal(rest) / NANOS_PER_SECOND) + "s"
    return text


# ---- sizes ------------------------------------------------------------------------------

SIZE_ACCEPTED = (
    "a number of bytes, or a number with a unit: k, M, G, T (powers of 1000) "
    "or Ki, Mi, Gi, Ti (powers of 1024), e.g. 64Mi"
)
_SIZE_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*?)B?")
# Units Docker and Kubernetes read differently; refused with both spellings offered.
_AMBIGUOUS = {"K": "k", "m": "M", "g": "G", "t": "T", "kb": "k", "mb": "M", "gb": "G", "tb": "T"}
_MISCASED = {unit.lower(): unit for unit in _SIZE_UNITS if unit}


def _unit_error(value: str, number: str, unit: str) -> UnitError:
    if unit in _AMBIGUOUS:
        decimal = _AMBIGUOUS[unit]
        binary = decimal.upper() + "i"
        message = (
            f"ambiguous unit in {value!r}: write {number}{binary} (powers of 1024) "
            f"or {number}{decimal} (powers of 1000)"
        )
    elif unit.lower() in _MISCASED:
        message = f"unknown unit in {value!r}: did you mean {number}{_MISCASED[unit.lower()]}?"
    else:
        message = f"unknown unit {unit!r} in {value!r}"
    return UnitError(message, SIZE_ACCEPTED)


def parse_size(value: int | float | str) -> int:
    """Bytes in ``value``: an integer, or "64Mi", "1G", "512k", "1.5Gi"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UnitError("expected a size", SIZE_ACCEPTED)
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if match is None:
            raise UnitError(f"invalid size {value!r}", SIZE_ACCEPTED)
        number, unit = Decimal(match.group(1)), match.group(2)
        if unit not in _SIZE_UNITS:
            raise _unit_error(value, match.group(1), unit)
    else:
        found = _number(value)
        if found is None:
            raise UnitError(f"invalid size {value!r}", SIZE_ACCEPTED)
        number, unit = found, ""
    total = number * _SIZE_UNITS[unit]
    return _whole(
        total,
        value,
        "size",
        "is not a whole number of bytes",
        "is too large",
        INT64_MAX,
        SIZE_ACCEPTED,
    )


def format_size(size: int) -> str | int:
    """The shortest exact form: 67108864 -> "64Mi", 2000000 -> "2M", 1023 -> 1023."""
    for unit in ("Ti", "Gi", "Mi", "Ki", "T", "G", "M", "k"):
        factor = _SIZE_UNITS[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return size


def size_text(size: int) -> str:
    """A size for messages: "64Mi", "1023 bytes"."""
    shown = format_size(size)
    return f"{shown} bytes" if isinstance(shown, int) else shown


# ---- CPUs ------------------------------------------------------------------------------

CPUS_ACCEPTED = 'a number of CPUs like 0.5 or 2, or millicores like "500m"'


def parse_cpus(value: int | float | str) -> int:
    """Nano-CPUs in ``value``: 0.5, 2, "1.5" or "500m"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UnitError("expected a number of CPUs", CPUS_ACCEPTED)
    text = str(value).strip()
    scale = 1
    if isinstance(value, str) and text.endswith("m"):
        text, scale = text[:-1], 1000
    number = _number(text) if isinstance(value, str) else _number(value)
    if number is None:
        raise UnitError(f"invalid CPU amount {value!r}", CPUS_ACCEPTED)
    nanos = number * NANO_CPUS_PER_CPU / scale
    return _whole(
        nanos,
        value,
        "CPU amount",
        "is finer than a nano-CPU",
        "is too large",
        INT64_MAX,
        CPUS_ACCEPTED,
    )


def format_cpus(nano_cpus: int) -> int | float | str:
    """2_000_000_000 -> 2, 500_000_000 -> 0.5; a string when a float would not be exact."""
    if nano_cpus % NANO_CPUS_PER_CPU == 0:
        return nano_cpus // NANO_CPUS_PER_CPU
    exact = Decimal(nano_cpus) / NANO_CPUS_PER_CPU
    as_float = float(exact)
    return as_float if Decimal(repr(as_float)) == exact else _plain(exact)


def cpus_text(nano_cpus: int) -> str:
    """A CPU amount for messages: "0.5", "2"."""
    return _plain(Decimal(nano_cpus) / NANO_CPUS_PER_CPU)


def _whole(
    total: Decimal,
    value: object,
    kind: str,
    fractional: str,
    too_large: str,
    limit: int,
    accepted: str,
) -> int:
    """``total`` (parsed from ``value``) as an int, or the UnitError that says why not:
    negative, not whole (``fractional``), above ``limit`` (``too_large``)."""
    if total < 0:
        raise UnitError(f"expected a {kind} >= 0, got {value!r}", accepted)
    if total != total.to_integral_value():
        raise UnitError(f"{kind} {value!r} {fractional}", accepted)
    if total > limit:
        raise UnitError(f"{kind} {value!r} {too_large}", accepted)
    return int(total)
