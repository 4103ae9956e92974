"""`orch dev up`'s summary: what a person needs next, from the cluster's record."""

from __future__ import annotations

import io
import types

from orch.cli import contexts
from orch.cli.commands import dev
from orch.cli.commands.dev import up_summary
from orch.cli.main import main
from orch.localcluster.cluster import ClusterRecord, ClusterSettings


def test_the_summary_names_managers_hosts_underlay_and_registry() -> None:
    record = ClusterRecord(
        prefix="orchabc",
        state_dir="/var/lib/orch/dev",
        managers=["10.212.3.1:4000"],
        etcd="10.212.3.1:4001",
        etcdctl=["--cacert", "/p/ca.crt", "--cert", "/p/c.crt", "--key", "/p/c.key"],
        registry="127.0.0.1:5055",
        registry_mirror="10.212.3.1:5055",
        underlay={"bridge": "orchabc-ul", "subnet": "10.212.3.0/24", "gateway": "10.212.3.1"},
        agents=[
            {"hostname": "node1", "address": "10.212.3.11", "netns": "orchabc-h1"},
            {"hostname": "node2", "address": "10.212.3.12", "netns": "orchabc-h2"},
        ],
    )
    assert up_summary(record) == (
        "local cluster orchabc is up (state in /var/lib/orch/dev)\n"
        "managers:  10.212.3.1:4000\n"
        "etcd:      10.212.3.1:4001\n"
        "etcdctl:   etcdctl --endpoints 10.212.3.1:4001 --cacert /p/ca.crt --cert /p/c.crt "
        "--key /p/c.key\n"
        "nodes:     node1  10.212.3.11  (netns orchabc-h1)\n"
        "           node2  10.212.3.12  (netns orchabc-h2)\n"
        "underlay:  10.212.3.0/24 on bridge orchabc-ul\n"
        "registry:  127.0.0.1:5055 (served at 10.212.3.1:5055)\n"
    )


def test_a_cluster_has_three_hosts_unless_told_otherwise() -> None:
    assert ClusterSettings().nodes == 3


def test_up_adds_or_refreshes_a_current_dev_context(tmp_path, monkeypatch) -> None:
    """`orch dev up` leaves other contexts alone and points `dev` at the new managers."""
    env = {"ORCH_CONFIG": str(tmp_path / "config.yaml"), "ORCH_STATE_DIR": str(tmp_path)}
    contexts.put(env, contexts.ClusterContext("prod", ("p:1",)), make_current=True)
    contexts.put(env, contexts.ClusterContext("dev", ("old:1",)), make_current=False)

    async def up(settings: ClusterSettings) -> ClusterRecord:
        return ClusterRecord(
            prefix="orchx",
            state_dir=str(tmp_path),
            managers=["10.1.1.1:4000"],
            tls_dir=str(tmp_path / "tls"),
        )

    fake_cluster = types.SimpleNamespace(ClusterSettings=ClusterSettings, up=up)
    monkeypatch.setattr(dev, "_cluster_module", lambda: fake_cluster)
    out = io.StringIO()
    assert main(["dev", "up"], out=out, err=io.StringIO(), env=env) == 0
    assert "context:   dev (now current" in out.getvalue()
    config = contexts.load(env)
    assert config.current == "dev"
    assert config.contexts["dev"].managers == ("10.1.1.1:4000",)
    assert config.contexts["dev"].tls_dir == str(tmp_path / "tls")  # the admin credentials
    assert "admin TLS: " + str(tmp_path / "tls") in out.getvalue()
    assert config.contexts["prod"].managers == ("p:1",)
