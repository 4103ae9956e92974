"""The update and rollback settings in manifests: loaded with their defaults, rendered
back, and bad values refused with the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.errors import ValidationError
from orch.manifests.loader import load_paths
from orch.manifests.render import specs_to_yaml
from orch.proto import specs_pb2

HEAD = """apiVersion: orch/v1
kind: Service
metadata: {name: web}
spec:
  image: reg:5000/web:1
"""


def load(tmp_path: Path, body: str) -> specs_pb2.ServiceSpec:
    path = tmp_path / "web.yaml"
    path.write_text(HEAD + body)
    return load_paths([path]).services[0]


def test_settings_load_with_defaults_and_render_back(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        "  update: {order: start-first, delay: 2s, failure_action: rollback, "
        "max_failure_ratio: 0.25}\n  rollback: {parallelism: 0, monitor: 1s}\n",
    )
    u, r = spec.update, spec.rollback
    assert (u.parallelism, u.order, u.failure_action) == (
        1,
        specs_pb2.UpdateConfig.START_FIRST,
        specs_pb2.UpdateConfig.ROLLBACK,
    )
    assert u.delay.ToMilliseconds() == 2000 and u.max_failure_ratio == pytest.approx(0.25)
    assert not u.HasField("monitor")  # unset: the planner's default (5s)
    assert r.parallelism == 0 and r.monitor.ToMilliseconds() == 1000
    assert load(tmp_path, "").HasField("update") is False
    (tmp_path / "again.yaml").write_text(specs_to_yaml([spec]))
    assert load_paths([tmp_path / "again.yaml"]).services[0] == spec


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("  update: {order: random}\n", "6: spec.update.order: unknown value 'random'"),
        ("  update: {max_failure_ratio: 2}\n", "6: spec.update.max_failure_ratio: expected a "
         "number from 0 to 1, got 2"),
        ("  rollback: {paralelism: 2}\n", "6: spec.rollback.paralelism: unknown field; did you "
         "mean 'spec.rollback.parallelism'?"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_with_their_line(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load(tmp_path, body)
    assert any(problem in p for p in caught.value.problems), caught.value.problems
