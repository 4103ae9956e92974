"""orch-manager reaches etcd over TLS or not at all: missing material, a plaintext
endpoint or a key others can read is refused at start with one line, before anything
runs; and `orch-manager etcd-pki` makes and extends etcd's PKI without overwriting."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orch.errors import OrchError
from orch.identity import etcdpki
from orch.manager.main import Manager, ManagerSettings, main


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    out = tmp_path / "pki"
    etcdpki.write_pki(out, {"e0": ["127.0.0.1"]}, ["m0"])
    return out


def tls_flags(pki: Path, client: str = "m0") -> list[str]:
    return [
        "--etcd-ca-file", str(pki / "ca.crt"),
        "--etcd-cert-file", str(pki / f"client-{client}.crt"),
        "--etcd-key-file", str(pki / f"client-{client}.key"),
    ]  # fmt: skip


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line orch-manager exits with (status 2, argparse's usage error)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("orch-manager: error: ")
    return lines[-1].removeprefix("orch-manager: error: ")


def test_no_tls_material_is_refused(pki, capsys) -> None:
    assert refused(["--etcd", "127.0.0.1:2379"], capsys) == (
        "etcd is reached over TLS only: give --etcd-ca-file, --etcd-cert-file and "
        "--etcd-key-file (deploy/README.md says how to make the etcd PKI)"
    )
    # Two of three is no better.
    assert "TLS only" in refused(tls_flags(pki)[:4], capsys)


def test_a_plaintext_endpoint_is_refused(pki, capsys) -> None:
    line = refused(["--etcd", "10.0.0.1:2379,http://10.0.0.2:2379", *tls_flags(pki)], capsys)
    assert line == (
        "etcd endpoint 'http://10.0.0.2:2379': only TLS is spoken to etcd; give host:port "
        "or https://host:port"
    )


def test_a_key_others_can_read_is_refused(pki, capsys) -> None:
    key = pki / "client-m0.key"
    os.chmod(key, 0o640)
    assert "has mode 0640" in refused(tls_flags(pki), capsys)


def test_a_certificate_that_is_not_the_keys_is_refused(pki, capsys) -> None:
    etcdpki.add_client(pki, etcdpki.load_ca(pki), "m1")
    flags = tls_flags(pki)
    flags[flags.index("--etcd-key-file") + 1] = str(pki / "client-m1.key")
    assert "is not the certificate of the key" in refused(flags, capsys)


async def test_a_manager_without_tls_material_does_not_connect() -> None:
    with pytest.raises(OrchError, match="no etcd TLS material"):
        await Manager(ManagerSettings(manager_id="m1", listen="127.0.0.1:0")).run()


def test_etcd_pki_makes_extends_and_never_overwrites(tmp_path, capsys) -> None:
    out = tmp_path / "pki"
    with pytest.raises(SystemExit) as exit_:
        main(["etcd-pki", "--out", str(out), "--member", "e1=10.0.0.1,10.0.1.1", "--client", "m1"])
    assert exit_.value.code == 0
    assert "made in" in capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    first_ca = (out / "ca.crt").read_bytes()
    tls = etcdpki.EtcdClientTLS.from_dir(out, "m1")
    assert tls.ca == first_ca

    # Again: a new member and client under the same CA; existing files refused.
    with pytest.raises(SystemExit) as exit_:
        main(["etcd-pki", "--out", str(out), "--member", "e2=10.0.0.2", "--client", "m2"])
    assert exit_.value.code == 0
    assert (out / "ca.crt").read_bytes() == first_ca
    assert (out / "member-e2.crt").exists() and (out / "client-m2.key").exists()
    before = (out / "client-m1.crt").read_bytes()
    with pytest.raises(SystemExit) as exit_:
        main(["etcd-pki", "--out", str(out), "--client", "m1", "--client", "m3"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"orch-manager etcd-pki: {out} already holds client-m1.crt, client-m1.key: "
        "remove it to issue it again"
    )
    assert (out / "client-m1.crt").read_bytes() == before
    assert not (out / "client-m3.crt").exists()  # nothing of the refused run was written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--member", "e1"], "want NAME=IP"),
        (["--member", "e1=10.0.0.1", "--member", "e1=10.0.0.2"], "given twice"),
        (["--member", "e1=nothost"], "is not an IP address"),
        (["--client", "a b"], "etcd client name 'a b'"),
    ],
)
def test_etcd_pki_refuses_bad_input_and_writes_nothing(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "pki"
    with pytest.raises(SystemExit) as exit_:
        main(["etcd-pki", "--out", str(out), *args])
    assert exit_.value.code in (1, 2)
    assert message in capsys.readouterr().err
    assert not out.exists()
