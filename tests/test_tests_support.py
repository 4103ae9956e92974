"""The test helpers themselves: a sampler that cannot fail would make every claim it
watches untestable."""

from __future__ import annotations

import itertools
import time

import pytest
from tests_support import Sampler, holds_for


def test_every_sample_kept():
    with Sampler(lambda: 1, 0.01) as s:
        time.sleep(0.2)
    s.assert_all(lambda v: v == 1)
    assert len(s.values) > 5


def test_probe_raises_fails():
    n = itertools.count()

    def probe():
        if next(n) > 3:
            raise RuntimeError("boom")
        return 1

    with pytest.raises(pytest.fail.Exception, match="boom"):
        with Sampler(probe, 0.01):
            time.sleep(0.2)


def test_violation():
    n = itertools.count()
    with Sampler(lambda: next(n), 0.01) as s:
        time.sleep(0.2)
    with pytest.raises(pytest.fail.Exception, match="broken in"):
        s.assert_all(lambda v: v < 5)


def test_stall():
    n = itertools.count()

    def probe():
        if next(n) == 3:
            time.sleep(0.5)  # a probe that hangs
        return 1

    with pytest.raises(pytest.fail.Exception, match="no sample for"):
        with Sampler(probe, 0.01, max_gap=0.2):
            time.sleep(0.8)


def test_holds_for():
    t0 = time.monotonic()
    assert holds_for(lambda: 1, 0.3, 0.02)
    assert time.monotonic() - t0 >= 0.3
    end = time.monotonic() + 0.1
    with pytest.raises(pytest.fail.Exception, match="broke"):
        holds_for(lambda: time.monotonic() < end, 0.5, 0.02)
