"""Join tokens: ``ORCH-1-<CA digest>-<secret>``, after swarmkit's ``SWMTKN-1-...``.

- The digest is the SHA-256 of the root CA certificate's DER, written in base 36
  (lowercase, zero-padded to 50 characters). A joining node fetches the CA over an
  unauthenticated channel and accepts it only if its digest is this one: the token pins
  the CA, so a man in the middle cannot hand out his own.
- The secret is 128 random bits in base 36 (25 characters). The worker and the manager
  token differ only in their secret; which secret matches decides the role.

Base 36 rather than hex: the token stays short enough to paste (83 characters) and reads
like swarmkit's, whose operators know the shape.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orch.identity.ca import Role, load_certs
from orch.identity.errors import CAPinMismatchError, TokenError

PREFIX = "ORCH"
VERSION = "1"
DIGEST_CHARS = 50  # 256 bits in base 36: 36**50 > 2**256
SECRET_CHARS = 25  # 128 bits in base 36: 36**25 > 2**128
SECRET_BITS = 128
FORMAT = (
    f"{PREFIX}-{VERSION}-<{DIGEST_CHARS} base-36 characters>-<{SECRET_CHARS} base-36 characters>"
)

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(
    rf"{PREFIX}-{VERSION}-(?P<digest>[0-9a-z]{{{DIGEST_CHARS}}})-(?P<secret>[0-9a-z]{{{SECRET_CHARS}}})"
)


def base36(n: int, width: int) -> str:
    """``n`` in lowercase base 36, zero-padded to ``width`` digits."""
    if n < 0 or n >= 36**width:
        raise ValueError(f"{n} does not fit in {width} base-36 digits")
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out))


def ca_digest(cert: x509.Certificate) -> str:
    """The digest a token pins: SHA-256 of the certificate's DER, in base 36."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return base36(int.from_bytes(hashlib.sha256(der).digest(), "big"), DIGEST_CHARS)


@dataclass(frozen=True)
class JoinToken:
    ca_digest: str
    secret: str

    def __str__(self) -> str:
        return f"{PREFIX}-{VERSION}-{self.ca_digest}-{self.secret}"

    def __repr__(self) -> str:
        # A token is a credential: never let it reach a log through a repr.
        return f"JoinToken(ca_digest={self.ca_digest!r}, secret=<hidden>)"


@dataclass(frozen=True)
class JoinTokens:
    """The cluster's two live tokens. Kept by the managers (in etcd, next increment)."""

    worker: JoinToken
    manager: JoinToken

    def for_role(self, role: Role) -> JoinToken:
        if role is Role.WORKER:
            return self.worker
        if role is Role.MANAGER:
            return self.manager
        raise TokenError(f"there is no join token for role {role.value!r}")


def new_join_token_secret() -> str:
    return base36(secrets.randbits(SECRET_BITS), SECRET_CHARS)


def new_join_token(root: x509.Certificate) -> JoinToken:
    return JoinToken(ca_digest(root), new_join_token_secret())


def new_join_tokens(root: x509.Certificate) -> JoinTokens:
    return JoinTokens(worker=new_join_token(root), manager=new_join_token(root))


def rotate_join_token(tokens: JoinTokens, role: Role) -> JoinTokens:
    """A new secret for ``role``'s token: the old one stops admitting new nodes (nodes that
    joined with it keep their certificates: a token is only for joining)."""
    fresh = JoinToken(tokens.for_role(role).ca_digest, new_join_token_secret())
    return replace(tokens, **{Role(role).value: fresh})


def parse_join_token(text: str) -> JoinToken:
    """A token as typed or pasted (surrounding white space is dropped).

    The error never repeats the text: it may be a real token with a typo, and errors end
    up in logs."""
    if not isinstance(text, str):
        raise TokenError(f"malformed join token: expected a string of the form {FORMAT}")
    m = _TOKEN.fullmatch(text.strip())
    if m is None:
        raise TokenError(f"malformed join token: expected {FORMAT}")
    return JoinToken(m["digest"], m["secret"])


def role_for_token(presented: str, tokens: JoinTokens) -> Role:
    """The role a join with ``presented`` is granted, or TokenError.

    Both secrets are compared in constant time, and always both, so neither the timing of
    a compare nor which compare ran tells an attacker anything about a secret."""
    token = parse_join_token(presented)
    if not hmac.compare_digest(token.ca_digest, tokens.worker.ca_digest):
        raise TokenError(
            "the join token pins another CA than this cluster's: it is another cluster's "
            "token, or one printed before a CA rotation; ask a manager for the current one"
        )
    as_worker = hmac.compare_digest(token.secret.encode(), tokens.worker.secret.encode())
    as_manager = hmac.compare_digest(token.secret.encode(), tokens.manager.secret.encode())
    if as_manager:
        return Role.MANAGER
    if as_worker:
        return Role.WORKER
    raise TokenError(
        "the join token is not valid: it was rotated, or mistyped; ask a manager for the "
        "current one"
    )


PROOF_BYTES = 32  # HMAC-SHA256


def join_proof(secret: str, csr_der: bytes) -> bytes:
    """What a joining node sends instead of its token's secret: HMAC-SHA256 keyed with the
    secret over the CSR's DER. It shows the node holds the secret without sending it (the
    join port is plaintext), and binds it to this one CSR: a proof seen on the wire is
    worth nothing for another key."""
    return hmac.new(secret.encode(), csr_der, hashlib.sha256).digest()


def check_token_digest(digest: str) -> str:
    """``digest`` if it has a token digest's form (it arrives from the network)."""
    if not isinstance(digest, str) or not re.fullmatch(f"[0-9a-z]{{{DIGEST_CHARS}}}", digest):
        raise TokenError(f"malformed join token digest: expected {DIGEST_CHARS} base-36 characters")
    return digest


def role_for_proof(digest: str, csr_der: bytes, proof: bytes, tokens: JoinTokens) -> Role:
    """The role a join is granted whose ``proof`` was made with a live token's secret over
    ``csr_der``, or TokenError. As in :func:`role_for_token`, both secrets are always
    tried, each compare in constant time."""
    check_token_digest(digest)
    if not hmac.compare_digest(digest, tokens.worker.ca_digest):
        raise TokenError(
            "the join token pins another CA than this cluster's: it is another cluster's "
            "token, or one printed before a CA rotation; ask a manager for the current one"
        )
    if not isinstance(proof, bytes) or len(proof) != PROOF_BYTES:
        raise TokenError(f"malformed join proof: expected {PROOF_BYTES} bytes of HMAC-SHA256")
    as_worker = hmac.compare_digest(proof, join_proof(tokens.worker.secret, csr_der))
    as_manager = hmac.compare_digest(proof, join_proof(tokens.manager.secret, csr_der))
    if as_manager:
        return Role.MANAGER
    if as_worker:
        return Role.WORKER
    raise TokenError(
        "the join token is not valid: it was rotated, or mistyped; ask a manager for the "
        "current one"
    )


def pin_root_ca(
    fetched_pem: bytes, token: JoinToken, *, source: str = "the manager"
) -> x509.Certificate:
    """The root the joining node will trust: the certificate of ``fetched_pem`` whose digest
    is the one ``token`` pins. Anything else the bundle holds is not trusted (during a
    rotation it holds the new root too; the node gets that later over mutual TLS)."""
    certs = load_certs(fetched_pem, what=f"the CA served by {source}")
    for cert in certs:
        if hmac.compare_digest(ca_digest(cert), token.ca_digest):
            return cert
    served = ", ".join(ca_digest(c) for c in certs)
    raise CAPinMismatchError(
        f"the CA certificate served by {source} (digest {served}) is not the one the join "
        f"token pins ({token.ca_digest}): refusing to join; this is a man in the middle, or "
        "the token is another cluster's"
    )
