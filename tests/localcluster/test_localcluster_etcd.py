"""The local cluster's etcd members: what each is started with, which sizes are allowed,
and (on the real thing) that members are recorded, stopped and started again by index,
and that `down` ends every member: with one stopped, and after a crash of the whole run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from tests_support import wait_until

from orch.errors import OrchError
from orch.localcluster import etcd
from orch.localcluster.cluster import ClusterRecord, ClusterSettings, LocalCluster, down


def test_three_members_share_one_initial_cluster_and_rejoin_as_existing(tmp_path) -> None:
    members = etcd.member_specs("127.0.0.1", 3, tmp_path)
    assert [m["name"] for m in members] == ["orch-dev-0", "orch-dev-1", "orch-dev-2"]
    assert [m["data_dir"] for m in members] == [str(tmp_path / "etcd" / str(i)) for i in range(3)]
    ports = [m[k].rsplit(":", 1)[1] for m in members for k in ("client", "peer")]
    assert len(set(ports)) == 6
    pki = tmp_path / "etcd-pki"
    first = etcd.member_argv(members, 1, token="orch-orchabc", new=True, pki=pki)
    again = etcd.member_argv(members, 1, token="orch-orchabc", new=False, pki=pki)

    def flag(argv: list[str], name: str) -> str:
        return argv[argv.index(name) + 1]

    initial = ",".join(f"orch-dev-{i}=https://{m['peer']}" for i, m in enumerate(members))
    assert flag(first, "--initial-cluster") == initial
    assert flag(first, "--name") == "orch-dev-1"
    assert flag(first, "--data-dir") == members[1]["data_dir"]
    assert flag(first, "--listen-client-urls") == f"https://{members[1]['client']}"
    assert flag(first, "--listen-peer-urls") == f"https://{members[1]['peer']}"
    assert not [a for a in first if "http://" in a]  # TLS only, clients and peers
    # Both sides demand a certificate of the etcd CA; each member has its own pair.
    assert "--client-cert-auth" in first and "--peer-client-cert-auth" in first
    assert flag(first, "--trusted-ca-file") == str(pki / "ca.crt")
    assert flag(first, "--peer-trusted-ca-file") == str(pki / "ca.crt")
    assert flag(first, "--cert-file") == str(pki / "member-orch-dev-1.crt")
    assert flag(first, "--key-file") == str(pki / "member-orch-dev-1.key")
    assert flag(first, "--peer-cert-file") == str(pki / "peer-orch-dev-1.crt")
    assert flag(first, "--peer-key-file") == str(pki / "peer-orch-dev-1.key")
    assert flag(first, "--initial-cluster-token") == "orch-orchabc"
    assert flag(first, "--initial-cluster-state") == "new"
    assert flag(again, "--initial-cluster-state") == "existing"
    assert [a for a in again if a not in ("new", "existing")] == [
        a for a in first if a not in ("new", "existing")
    ]


@pytest.mark.parametrize("members", [0, 2, 4, 7])
def test_an_even_or_odd_size_outside_one_three_five_is_refused(tmp_path, members) -> None:
    cluster = LocalCluster(ClusterSettings(state_dir=tmp_path, etcd_members=members))
    with pytest.raises(OrchError, match="etcd_members: want one of 1, 3, 5"):
        cluster._check_settings()


def _etcd_processes(state_dir: Path) -> list[int]:
    """Pids of etcd processes whose data dir lies in ``state_dir``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"etcd") and str(state_dir).encode() in b" ".join(argv):
                found.append(int(pid))
    return found


def _etcd_is_tls_only(c: LocalCluster, state: Path) -> None:
    """The PKI is private (0700, files 0600); every member serves https only; etcdctl
    without a certificate is refused where the harness's certificate is let in; the
    manager was started with its own client certificate (and it is up: `up` waited)."""
    pki = state / "etcd-pki"
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in pki.iterdir()} == {0o600}
    manager_cert = pki / f"client-{c.record.prefix}-m0.crt"
    assert manager_cert.exists()
    manager_argv = Path(f"/proc/{c.record.pids['manager-0']}/cmdline").read_bytes().split(b"\0")
    assert str(manager_cert).encode() in manager_argv
    for pid in (c.record.pids[f"etcd-{i}"] for i in range(3)):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"http://" not in argv and b"--client-cert-auth" in argv
    good = subprocess.run(
        [*c.etcdctl_argv(), "endpoint", "health"], capture_output=True, text=True, timeout=30
    )
    assert good.returncode == 0, good.stderr
    ctl = c.etcdctl_argv()
    no_cert = ctl[: ctl.index("--cert")]  # etcdctl --endpoints ... --cacert CA
    bare = subprocess.run(
        [*no_cert, "--dial-timeout", "2s", "--command-timeout", "3s", "endpoint", "health"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bare.returncode != 0


@pytest.mark.integration
def test_members_stop_start_and_down_ends_them_all_also_after_a_crash() -> None:
    if missing := [b for b in ("etcd", "runc", "nsenter") if not shutil.which(b)]:
        pytest.skip(f"missing {', '.join(missing)}")
    state = Path(tempfile.mkdtemp(prefix="orch-test-cluster-etcd-"))
    settings = ClusterSettings(state_dir=state, nodes=1, managers=1, etcd_members=3, registry=False)
    c = LocalCluster(settings)
    try:
        asyncio.run(c.up())
        assert len(c.record.etcd.split(",")) == 3
        _etcd_is_tls_only(c, state)
        names = sorted(n for n in c.record.pids if n.startswith("etcd"))
        assert names == ["etcd-0", "etcd-1", "etcd-2"]
        assert sorted(_etcd_processes(state)) == sorted(c.record.pids[n] for n in names)

        leader = asyncio.run(c.etcd_leader())
        assert leader is not None
        old = c.record.pids[f"etcd-{leader}"]
        asyncio.run(c.stop_etcd_member(leader))
        assert f"etcd-{leader}" not in c.record.pids  # a dead pid is not kept for down()
        assert old not in _etcd_processes(state)
        assert wait_until(lambda: asyncio.run(c.etcd_leader()) not in (None, leader), 15)
        asyncio.run(c.start_etcd_member(leader))  # it answers reads: it rejoined
        assert len(_etcd_processes(state)) == 3
        with pytest.raises(OrchError, match="already running"):
            asyncio.run(c.start_etcd_member(leader))

        # `down` with a member stopped ends the other two.
        asyncio.run(c.stop_etcd_member(0, crash=False))
        with pytest.raises(OrchError, match="not running"):
            asyncio.run(c.stop_etcd_member(0))
        assert asyncio.run(down(state))
        assert _etcd_processes(state) == []
        assert not (state / "etcd").exists()
        assert not (state / "etcd-pki").exists()

        # A crash: the run's processes die, all but one member; what `up` wrote down lets
        # `down` (or the next `up`) end that one too.
        c = LocalCluster(settings)
        asyncio.run(c.up())
        survivor = c.record.pids["etcd-2"]
        for pid in c.record.pids.values():
            if pid != survivor:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: _etcd_processes(state) == [survivor], 10, what="the crash")
        assert asyncio.run(down(state))
        assert _etcd_processes(state) == []
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(down(state))
        shutil.rmtree(state, ignore_errors=True)


def test_a_record_with_fields_of_another_version_still_loads(tmp_path) -> None:
    """Test sessions of other versions share /tmp: a sweep must read their records."""
    ClusterRecord(prefix="orchabc", state_dir=str(tmp_path), etcd="10.0.0.1:2379").save()
    raw = json.loads((tmp_path / "cluster.json").read_text())
    (tmp_path / "cluster.json").write_text(json.dumps({**raw, "from_the_future": [1]}))
    record = ClusterRecord.load(tmp_path)
    assert record is not None and record.prefix == "orchabc" and record.etcd == "10.0.0.1:2379"
