"""Key and certificate files: 0600 in 0700, atomic, refused when too open."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.errors import IdentityError
from orch.identity import ca as pki
from orch.identity import material
from orch.identity.material import NodeMaterial, load_node_material, save_node_material

from .pki import issue

ROOT = pki.create_root_ca()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask: the modes must not depend on the caller's."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _material() -> NodeMaterial:
    issued = issue(ROOT)
    return NodeMaterial(issued.key, tuple(issued.chain), (ROOT.cert,))


def test_saved_material_is_private_and_reads_back(tmp_path: Path, open_umask: None) -> None:
    tls = tmp_path / "state" / "tls"
    saved = _material()
    save_node_material(tls, saved)
    assert _mode(tls) == 0o700
    files = sorted(p.name for p in tls.iterdir())
    assert files == sorted([material.KEY_FILE, material.CERT_FILE, material.ROOTS_FILE])
    assert all(_mode(tls / name) == 0o600 for name in files)
    loaded = load_node_material(tls)
    assert loaded.key.private_numbers() == saved.key.private_numbers()
    assert loaded.chain == saved.chain and loaded.roots == saved.roots
    assert loaded.leaf == saved.chain[0]
    key_pem, chain_pem = loaded.grpc_pair()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert chain_pem == pki.cert_pem(*saved.chain) and loaded.roots_pem() == pki.cert_pem(ROOT.cert)


def test_renewed_material_replaces_the_old_and_leaves_no_temp_files(tmp_path: Path) -> None:
    save_node_material(tmp_path / "tls", _material())
    renewed = _material()
    save_node_material(tmp_path / "tls", renewed)
    assert load_node_material(tmp_path / "tls").leaf == renewed.leaf
    assert not [p for p in (tmp_path / "tls").iterdir() if p.name.startswith(".")]


def test_a_key_file_open_to_others_is_refused(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    save_node_material(tls, _material())
    os.chmod(tls / material.KEY_FILE, 0o644)
    with pytest.raises(IdentityError) as err:
        load_node_material(tls)
    message = str(err.value)
    assert "mode 0644" in message and "must be 0600" in message and "chmod 600" in message


def test_a_directory_open_to_others_is_refused_not_fixed(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    os.chmod(tls, 0o755)
    with pytest.raises(IdentityError, match="mode 0755; run chmod 700"):
        save_node_material(tls, _material())
    assert _mode(tls) == 0o755 and not list(tls.iterdir())


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tls").write_text("x")
    with pytest.raises(IdentityError, match="should be a directory"):
        material.ensure_private_dir(tmp_path / "tls")


def test_missing_material_says_the_node_has_no_identity(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="missing: this node has no TLS identity yet"):
        load_node_material(tmp_path / "tls")
    assert not (tmp_path / "tls").exists()  # reading creates nothing
    (tmp_path / "tls").mkdir(mode=0o700)
    with pytest.raises(IdentityError, match=r"node\.key is missing"):
        load_node_material(tmp_path / "tls")


def test_a_certificate_of_another_key_is_refused(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    save_node_material(tls, _material())
    material.write_private_file(tls / material.CERT_FILE, pki.cert_pem(issue(ROOT).cert))
    with pytest.raises(IdentityError, match="is not the certificate of the key"):
        load_node_material(tls)


def test_a_key_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    save_node_material(tls, _material())
    material.write_private_file(tls / material.KEY_FILE, b"not a key")
    with pytest.raises(IdentityError, match="not an unencrypted PEM private key"):
        load_node_material(tls)


def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file away needs root")
    path = tmp_path / "node.key"
    material.write_private_file(path, b"x")
    os.chown(path, 65534, 65534)
    with pytest.raises(IdentityError, match="belongs to uid 65534"):
        material.read_private_file(path)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "node.crt"
    target.mkdir()  # rename onto a directory fails
    with pytest.raises(OSError):
        material.write_private_file(target, b"new")
    assert target.is_dir() and [p.name for p in tmp_path.iterdir()] == ["node.crt"]


def test_a_symlink_where_the_key_file_should_be_is_refused(tmp_path: Path) -> None:
    """The file checked is the file read: a link to a private file elsewhere is refused,
    not followed."""
    tls = tmp_path / "tls"
    save_node_material(tls, _material())
    key = tls / material.KEY_FILE
    elsewhere = tmp_path / "elsewhere.pem"
    key.rename(elsewhere)
    key.symlink_to(elsewhere)
    with pytest.raises(IdentityError, match="cannot open as a private file"):
        load_node_material(tls)


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    save_node_material(tls, _material())
    os.chown(tls, 12345, -1)
    with pytest.raises(IdentityError, match="belongs to uid 12345"):
        load_node_material(tls)
