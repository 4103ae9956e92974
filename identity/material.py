"""A node's TLS material on disk: its key, its certificate chain, the roots it trusts.

Everything is written 0600 into a 0700 directory, each file by temp file + rename, so a
crash leaves the old or the new file, never half of one (a node that loses its key must
join again). Reading refuses a key file that others could read, as ssh does: a key that
was exposed must be treated as leaked, not silently used.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orch.errors import IdentityError
from orch.identity.ca import cert_pem, key_pem, load_certs

KEY_FILE = "node.key"
CERT_FILE = "node.crt"  # the leaf, then the chain the CA sent with it
ROOTS_FILE = "ca.crt"  # the trusted roots (two during a CA rotation)

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter; made (with parents) if missing."""
    path = Path(path)
    if not path.exists():
        path.mkdir(mode=DIR_MODE, parents=True)
        os.chmod(path, DIR_MODE)  # mkdir's mode is cut by the umask; this is not
    return check_private_dir(path)


def check_private_dir(path: Path) -> Path:
    """``path`` if it is a directory only its owner can enter. One that others can read or
    enter is refused, not fixed: something else chose that mode and may depend on it, or
    has already looked inside."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IdentityError(f"{path} is missing: this node has no TLS identity yet") from None
    if not stat.S_ISDIR(st.st_mode):
        raise IdentityError(f"{path} should be a directory for TLS material but is not")
    if st.st_uid != os.geteuid():
        raise IdentityError(
            f"{path} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()})"
        )
    if st.st_mode & 0o077:
        raise IdentityError(
            f"{path} holds TLS keys but has mode {stat.S_IMODE(st.st_mode):04o}; "
            f"run chmod 700 {path} (or remove it and join again)"
        )
    return path


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 from its first byte."""
    path = Path(path)
    # mkstemp: a fresh name (O_EXCL) beside the target, so the rename stays in one file
    # system and two writers never share a temp file; created 0600, never wider.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # The rename itself is only durable once the directory is synced.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private_file(path: Path) -> bytes:
    """The bytes of a file that must be private: owned by us, not readable by others. The
    checks and the read are of one open file (no symlink followed), so the file checked is
    the file read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise IdentityError(f"{path} is missing: this node has no TLS identity yet") from None
    except OSError as exc:  # ELOOP: a symlink where a key file should be
        raise IdentityError(f"{path}: cannot open as a private file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IdentityError(f"{path} should be a regular file but is not")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise IdentityError(
                f"{path} has mode {mode:04o}: a key file must be 0600 (others could have "
                f"read it); if it may have leaked, remove the node and join again, else "
                f"chmod 600 {path}"
            )
        if st.st_uid != os.geteuid():
            raise IdentityError(
                f"{path} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()})"
            )
        return f.read()


@dataclass(frozen=True)
class NodeMaterial:
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]  # leaf first
    roots: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    def grpc_pair(self) -> tuple[bytes, bytes]:
        """(private key PEM, certificate chain PEM): what grpc's credentials take."""
        return key_pem(self.key), cert_pem(*self.chain)

    def roots_pem(self) -> bytes:
        return cert_pem(*self.roots)


def save_node_material(directory: Path, material: NodeMaterial) -> None:
    """Write the material, each file atomically. The three files together are not: a
    crash between the certificate and the key leaves a pair that does not match, which
    load_node_material refuses (the node then joins again) rather than using."""
    directory = ensure_private_dir(directory)
    write_private_file(directory / ROOTS_FILE, material.roots_pem())
    key, chain = material.grpc_pair()
    write_private_file(directory / CERT_FILE, chain)
    write_private_file(directory / KEY_FILE, key)


def load_node_material(directory: Path) -> NodeMaterial:
    """The material ``save_node_material`` wrote, checked: modes, owner, key and
    certificate of one pair. Creates nothing."""
    directory = check_private_dir(directory)
    key_path = directory / KEY_FILE
    try:
        key = serialization.load_pem_private_key(read_private_file(key_path), password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{key_path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{key_path} holds a {type(key).__name__}, not an ECDSA key")
    chain = load_certs(read_private_file(directory / CERT_FILE), what=str(directory / CERT_FILE))
    roots = load_certs(read_private_file(directory / ROOTS_FILE), what=str(directory / ROOTS_FILE))
    if chain[0].public_key() != key.public_key():
        raise IdentityError(
            f"{directory / CERT_FILE} is not the certificate of the key in {key_path} "
            "(a renewal was interrupted?); the node must join again"
        )
    return NodeMaterial(key, tuple(chain), tuple(roots))
