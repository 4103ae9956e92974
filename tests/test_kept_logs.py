"""The suite's own diagnostics: a cluster's logs are kept when a test of its module failed,
and when its set-up failed (before any test could report)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest


@pytest.fixture
def conftest(pytestconfig: pytest.Config) -> types.ModuleType:
    """tests/conftest.py as pytest loaded it (``import conftest`` would give whichever
    conftest module was imported last: tests/runtime's, in some orders)."""
    path = str(Path(__file__).parent / "conftest.py")
    for plugin in pytestconfig.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == path:
            return plugin
    raise AssertionError(f"{path} is not loaded")


def cluster_logs(tmp_path: Path) -> Path:
    logs = tmp_path / "state" / "logs"
    logs.mkdir(parents=True)
    (logs / "etcd-0.log").write_text("etcd: bind: address already in use\n")
    return logs


def test_a_failed_set_up_keeps_the_clusters_logs(
    conftest: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conftest, "ARTIFACTS", tmp_path / "artifacts")
    monkeypatch.setattr(conftest, "_kept", [])  # not listed in this run's summary
    node = types.SimpleNamespace(module=types.SimpleNamespace(__name__="tests.x.test_quiet"))
    logs = cluster_logs(tmp_path)

    conftest.keep_logs_if_failed(node, logs)  # no test failed, no set-up failure: nothing
    assert not (tmp_path / "artifacts").exists()

    conftest.keep_logs_if_failed(node, logs, ("tests/x/test_quiet.py set-up",))
    kept = tmp_path / "artifacts" / "test_quiet" / "state"
    assert (kept / "etcd-0.log").read_text() == "etcd: bind: address already in use\n"
    assert (kept / "FAILED").read_text() == "tests/x/test_quiet.py set-up\n"
    assert conftest._kept == [kept]
