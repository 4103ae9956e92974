"""etcd refuses every client but the etcd CA's, asserted from outside on the session's
real etcd (TLS, client-certificate auth, as the local cluster and deploy/ run it): no
certificate, plaintext, a certificate of another CA, and a worker's certificate of the
cluster CA are all refused, by etcd3aio and by etcdctl alike, and nothing they tried to
write is there. Each refusal sits beside the same call with the right certificate, which
succeeds: the refusal is the certificate's doing, not the test's."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from etcd3aio import Etcd3Client, EtcdError
from tests_support import EtcdMembers

from orch.errors import StoreError
from orch.identity import ca as cluster_pki
from orch.identity import etcdpki
from orch.identity.material import write_private_file
from orch.localcluster.etcd import HARNESS_CLIENT
from orch.manager.state.store import EtcdStore

pytestmark = pytest.mark.integration

KEY = "/orch/test/tls-probe"
# What etcd's refusal looks like to a TLS client: an alert about its certificate (Go
# sends "bad certificate", newer Go "certificate required" for none), or the connection
# closed right after the handshake before the alert was read.
REFUSALS = re.compile(r"BAD_CERTIFICATE|CERTIFICATE_REQUIRED|SSLEOFError|SSLZeroReturnError")


def _cluster_worker_material(tmp_path: Path) -> tuple[Path, Path]:
    """A worker's certificate and key from the *cluster* CA, as an agent holds them."""
    root = cluster_pki.create_root_ca()
    key = cluster_pki.new_private_key()
    cert = cluster_pki.issue_certificate(
        root, cluster_pki.create_csr(key), node_id=cluster_pki.new_id(), role="worker"
    )
    cert_file, key_file = tmp_path / "node.crt", tmp_path / "node.key"
    write_private_file(cert_file, cluster_pki.cert_pem(cert))
    write_private_file(key_file, cluster_pki.key_pem(key))
    return cert_file, key_file


def _other_ca_material(tmp_path: Path) -> tuple[Path, Path]:
    """A client certificate of another etcd CA (another cluster's etcd, say)."""
    other = tmp_path / "other-pki"
    etcdpki.write_pki(other, {}, ["intruder"])
    return other / "client-intruder.crt", other / "client-intruder.key"


def _material(kind: str, tmp_path: Path) -> tuple[Path, Path]:
    return {"other-ca": _other_ca_material, "cluster-ca-worker": _cluster_worker_material}[kind](
        tmp_path
    )


async def etcdctl(
    etcd: EtcdMembers, *args: str, auth: list[str], endpoints: str | None = None
) -> tuple[int, str]:
    """(exit code, stderr) of etcdctl at the session etcd with the TLS flags ``auth``."""
    proc = await asyncio.create_subprocess_exec(
        "etcdctl", "--endpoints", endpoints or ",".join(etcd.endpoints),
        "--dial-timeout", "2s", "--command-timeout", "3s", *auth, *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    return proc.returncode or 0, err.decode()


def tls_probe(endpoint: str, ca: Path, cert: Path | None = None, key: Path | None = None) -> str:
    """A TLS handshake with etcd's client port (etcd verified as ``orch-etcd``), then a
    ``GET /version``: etcd's answer, or the TLS alert etcd sent (``ssl.SSLError``'s
    reason, e.g. ``SSLV3_ALERT_BAD_CERTIFICATE``). From outside, this shows the refusal
    happens in the handshake, which etcdctl's "deadline exceeded" does not say."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=etcdpki.SERVER_NAME) as tls:
                tls.sendall(b"GET /version HTTP/1.1\r\nHost: orch-etcd\r\n\r\n")
                return tls.recv(4096).decode(errors="replace")
    except ssl.SSLError as exc:
        # The alert, or an EOF when etcd closed before Python read the alert.
        return f"refused: {exc.reason or type(exc).__name__}"


def _good_auth(etcd: EtcdMembers) -> list[str]:
    argv = etcd.etcdctl()
    return argv[argv.index("--cacert") :]


async def _raw_get(client: Etcd3Client) -> None:
    await client.connect()
    try:
        await client.kv.get(KEY, timeout=2.0, max_attempts=1)
    finally:
        await client.close()


async def _refused(client: Etcd3Client) -> None:
    with pytest.raises((grpc.aio.AioRpcError, EtcdError, TimeoutError)):
        await _raw_get(client)


async def _nothing_written(store: EtcdStore) -> None:
    assert await store.get_key(KEY) is None


async def test_the_right_certificate_is_let_in(session_etcd: EtcdMembers, store) -> None:
    """The control for every refusal below: the harness's certificate reads and writes."""
    await _raw_get(
        Etcd3Client(
            session_etcd.endpoints,
            tls_server_name=etcdpki.SERVER_NAME,
            **session_etcd.tls.channel_args(),
        )
    )
    try:
        code, err = await etcdctl(session_etcd, "put", KEY, "x", auth=_good_auth(session_etcd))
        assert code == 0, err
        assert (await store.get_key(KEY)).value == b"x"
    finally:
        await etcdctl(session_etcd, "del", KEY, auth=_good_auth(session_etcd))
    pki = session_etcd.pki
    answer = await asyncio.to_thread(
        tls_probe,
        session_etcd.endpoints[0],
        pki / "ca.crt",
        pki / f"client-{HARNESS_CLIENT}.crt",
        pki / f"client-{HARNESS_CLIENT}.key",
    )
    assert answer.startswith("HTTP/1.1 200") and "etcdserver" in answer, answer


async def test_a_client_without_a_certificate_is_refused(session_etcd: EtcdMembers, store) -> None:
    # TLS that verifies etcd but presents nothing: the handshake fails.
    await _refused(
        Etcd3Client(
            session_etcd.endpoints, tls_server_name=etcdpki.SERVER_NAME, ca_cert=session_etcd.tls.ca
        )
    )
    ca = session_etcd.pki / "ca.crt"
    code, _ = await etcdctl(session_etcd, "put", KEY, "x", auth=["--cacert", str(ca)])
    assert code != 0
    answer = await asyncio.to_thread(tls_probe, session_etcd.endpoints[0], ca)
    assert answer.startswith("refused:") and REFUSALS.search(answer), answer
    await _nothing_written(store)


async def test_a_plaintext_client_is_refused(session_etcd: EtcdMembers, store) -> None:
    await _refused(Etcd3Client(session_etcd.endpoints))  # an insecure channel
    plain = ",".join(f"http://{e}" for e in session_etcd.endpoints)
    code, _ = await etcdctl(session_etcd, "put", KEY, "x", auth=[], endpoints=plain)
    assert code != 0
    await _nothing_written(store)


@pytest.mark.parametrize("kind", ["other-ca", "cluster-ca-worker"])
async def test_a_certificate_of_another_ca_is_refused(
    session_etcd: EtcdMembers, store, tmp_path: Path, kind: str
) -> None:
    """Another etcd CA's client, and a worker's certificate of the cluster CA (which etcd
    must never trust: any worker could then write the store)."""
    cert, key = _material(kind, tmp_path)
    intruder = etcdpki.EtcdClientTLS.load(session_etcd.pki / "ca.crt", cert, key)
    with pytest.raises(StoreError, match="cannot reach etcd"):
        await EtcdStore.connect(session_etcd.endpoints, tls=intruder, timeout=2.0)
    ca = session_etcd.pki / "ca.crt"
    auth = ["--cacert", str(ca), "--cert", str(cert), "--key", str(key)]
    code, _ = await etcdctl(session_etcd, "put", KEY, "x", auth=auth)
    assert code != 0
    answer = await asyncio.to_thread(tls_probe, session_etcd.endpoints[0], ca, cert, key)
    assert answer.startswith("refused:") and REFUSALS.search(answer), answer
    await _nothing_written(store)


async def test_the_store_refuses_a_plaintext_endpoint(session_etcd: EtcdMembers) -> None:
    plain = [f"http://{e}" for e in session_etcd.endpoints]
    with pytest.raises(StoreError, match="only TLS is spoken to etcd"):
        await EtcdStore.connect(plain, tls=session_etcd.tls)
