"""Durations, sizes and CPU amounts: what is accepted, what is refused, exact round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orch.manifests.units import (
    INT64_MAX,
    MAX_DURATION_NANOS,
    UnitError,
    format_cpus,
    format_duration,
    format_size,
    parse_cpus,
    parse_duration,
    parse_size,
)

S = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("100ms", 100_000_000),
        ("5s", 5 * S),
        ("1m30s", 90 * S),
        ("2h", 7200 * S),
        ("1.5s", 1_500_000_000),
        ("1h2m3.25s", 3723 * S + 250_000_000),
        ("250us", 250_000),
        ("250µs", 250_000),
        ("7ns", 7),
        (30, 30 * S),
        (0.5, S // 2),
        ("30", 30 * S),
        ("0", 0),
    ],
)
def test_parse_duration(text: str | int | float, nanos: int) -> None:
    assert parse_duration(text) == nanos


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("5 s", "invalid duration '5 s'"),
        ("5sec", "invalid duration"),
        ("-5s", "invalid duration"),
        (-5, "expected a duration >= 0"),
        ("1.5ns", "finer than a nanosecond"),
        (True, "expected a duration, got true"),
        ("", "invalid duration"),
        (10**12, "too long"),
    ],
)
def test_bad_durations(value: object, fragment: str) -> None:
    with pytest.raises(UnitError) as caught:
        parse_duration(value)  # type: ignore[arg-type]
    assert fragment in caught.value.message
    assert "1m30s" in caught.value.accepted


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "0s"),
        (100_000_000, "100ms"),
        (1_500_000, "1.5ms"),
        (90 * S, "1m30s"),
        (7200 * S, "2h"),
        (3605 * S, "1h5s"),
        (1_500_000_000, "1.5s"),
        (12, "12ns"),
    ],
)
def test_format_duration(nanos: int, text: str) -> None:
    assert format_duration(nanos) == text


@given(st.integers(min_value=0, max_value=MAX_DURATION_NANOS))
def test_duration_round_trip(nanos: int) -> None:
    assert parse_duration(format_duration(nanos)) == nanos


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("64Mi", 64 * 2**20),
        ("64MiB", 64 * 2**20),
        ("64M", 64_000_000),
        ("64MB", 64_000_000),
        ("1G", 10**9),
        ("1Gi", 2**30),
        ("512k", 512_000),
        ("512Ki", 512 * 1024),
        ("1.5Gi", 3 * 2**29),
        ("100B", 100),
    ],
)
def test_parse_size(value: str | int, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("512m", "ambiguous unit in '512m': write 512Mi (powers of 1024) or 512M"),
        ("1g", "ambiguous unit in '1g': write 1Gi"),
        ("4K", "write 4Ki (powers of 1024) or 4k (powers of 1000)"),
        ("64mi", "did you mean 64Mi?"),
        ("64Q", "unknown unit 'Q'"),
        ("lots", "invalid size 'lots'"),
        (-1, "expected a size >= 0"),
        ("0.5", "not a whole number of bytes"),
        (1.5, "not a whole number of bytes"),
        ("100000000Ti", "too large"),
        (True, "expected a size"),
    ],
)
def test_bad_sizes(value: object, fragment: str) -> None:
    with pytest.raises(UnitError) as caught:
        parse_size(value)  # type: ignore[arg-type]
    assert fragment in caught.value.message
    assert "64Mi" in caught.value.accepted


@pytest.mark.parametrize(
    ("size", "shown"),
    [(64 * 2**20, "64Mi"), (2 * 10**6, "2M"), (1023, 1023), (0, 0), (3 * 2**29, "1536Mi")],
)
def test_format_size(size: int, shown: str | int) -> None:
    assert format_size(size) == shown


@given(st.integers(min_value=0, max_value=INT64_MAX))
def test_size_round_trip(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize(
    ("value", "nanos"),
    [
        (1, S),
        (0.5, S // 2),
        ("0.5", S // 2),
        ("500m", S // 2),
        ("1500m", 3 * S // 2),
        (0.1, 100_000_000),
        (2.25, 2_250_000_000),
    ],
)
def test_parse_cpus(value: object, nanos: int) -> None:
    assert parse_cpus(value) == nanos  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("half", "invalid CPU amount 'half'"),
        ("500x", "invalid CPU amount"),
        (-1, "expected a CPU amount >= 0"),
        (1e-10, "finer than a nano-CPU"),
        (True, "expected a number of CPUs"),
    ],
)
def test_bad_cpus(value: object, fragment: str) -> None:
    with pytest.raises(UnitError) as caught:
        parse_cpus(value)  # type: ignore[arg-type]
    assert fragment in caught.value.message


@given(st.integers(min_value=0, max_value=INT64_MAX))
def test_cpus_round_trip(nanos: int) -> None:
    assert parse_cpus(format_cpus(nanos)) == nanos


def test_format_cpus_prefers_plain_numbers() -> None:
    assert format_cpus(2 * S) == 2
    assert format_cpus(S // 2) == 0.5
