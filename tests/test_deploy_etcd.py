"""deploy/'s etcd, run as written: the PKI `orch-manager etcd-pki` makes, the command
line of systemd/orch-etcd.service with the values of systemd/orch-etcd.default, and the
manager's etcd flags of systemd/orch-manager.service. Only paths and ports move into the
test's sandbox (the VM's /etc/orch and 2379/2380 are not ours here). The manager's files
connect and write; a client without a certificate is refused."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
from pathlib import Path

import grpc
import pytest
from etcd3aio import Etcd3Client, EtcdError

from orch.errors import StoreError
from orch.identity import etcdpki
from orch.localcluster.cluster import free_port
from orch.manager.main import main as manager_main
from orch.manager.state.api import Create, Kind
from orch.manager.state.store import EtcdStore
from orch.proto import objects_pb2, specs_pb2

pytestmark = pytest.mark.integration

SYSTEMD = Path(__file__).resolve().parent.parent / "deploy" / "systemd"


def exec_start(unit: Path) -> list[str]:
    """The ExecStart command of ``unit``, continuation lines joined, split as systemd does
    (close enough for these units: no quoting, ``${VAR}`` expanded later)."""
    text = unit.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def environment(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def expand(argv: list[str], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], a) for a in argv]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


async def test_the_deploy_units_run_etcd_tls_only_and_the_manager_gets_in(tmp_path) -> None:
    if not shutil.which("etcd"):
        pytest.skip("etcd is not installed")
    pki = tmp_path / "etcd-pki"
    with pytest.raises(SystemExit) as done:
        manager_main(
            ["etcd-pki", "--out", str(pki), "--member", "etcd1=127.0.0.1", "--client", "mgr1"]
        )
    assert done.value.code == 0

    client_port, peer_port = free_port(), free_port()
    env = environment(SYSTEMD / "orch-etcd.default")
    assert {"ORCH_ETCD_NAME", "ORCH_ETCD_IP", "ORCH_ETCD_CLUSTER"} <= set(env)
    env |= {
        "ORCH_ETCD_NAME": "etcd1",
        "ORCH_ETCD_IP": "127.0.0.1",
        "ORCH_ETCD_CLUSTER": "etcd1=https://127.0.0.1:2380",
    }
    argv = expand(exec_start(SYSTEMD / "orch-etcd.service"), env)
    assert not [a for a in argv if "http://" in a]
    assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
    moved = [
        a.replace("/etc/orch/etcd-pki", str(pki))
        .replace("/var/lib/orch-etcd", str(tmp_path / "data"))
        .replace(":2379", f":{client_port}")
        .replace(":2380", f":{peer_port}")
        for a in argv
    ]
    moved[0] = shutil.which("etcd") or moved[0]

    # The manager's etcd files where its unit reads them (/etc/orch/etcd, moved).
    manager = exec_start(SYSTEMD / "orch-manager.service")
    etc = tmp_path / "etc-orch-etcd"
    etc.mkdir(mode=0o700)
    sources = {"--etcd-ca-file": "ca.crt", "--etcd-cert-file": "client-mgr1.crt"}
    sources["--etcd-key-file"] = "client-mgr1.key"
    files = {}
    for name, source in sources.items():
        target = Path(flag(manager, name))
        assert target.parent == Path("/etc/orch/etcd")
        files[name] = etc / target.name
        shutil.copy2(pki / source, files[name])

    log = (tmp_path / "etcd.log").open("wb")
    proc = await asyncio.create_subprocess_exec(*moved, stdout=log, stderr=log)
    endpoint = f"127.0.0.1:{client_port}"
    try:
        tls = etcdpki.EtcdClientTLS.load(*files.values())
        store = await _connect_until_up(endpoint, tls)
        try:
            svc = objects_pb2.Service(id="s1", spec=specs_pb2.ServiceSpec(name="s1", replicas=1))
            await store.commit([Create(Kind.SERVICE, svc)])
            assert (await store.get(Kind.SERVICE, "s1")) is not None
        finally:
            await store.close()
        bare = Etcd3Client([endpoint], tls_server_name=etcdpki.SERVER_NAME, ca_cert=tls.ca)
        await bare.connect()
        try:
            with pytest.raises((grpc.aio.AioRpcError, EtcdError, TimeoutError)):
                await bare.kv.get("/orch/x", timeout=2.0, max_attempts=1)
        finally:
            await bare.close()
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()
        log.close()


async def _connect_until_up(endpoint: str, tls: etcdpki.EtcdClientTLS) -> EtcdStore:
    async with asyncio.timeout(30):
        while True:
            try:
                return await EtcdStore.connect([endpoint], tls=tls, timeout=2.0)
            except StoreError:  # not listening yet
                await asyncio.sleep(0.2)
