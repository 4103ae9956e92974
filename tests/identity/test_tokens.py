"""Join tokens: format, roles, rotation, and CA pinning."""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from orch.errors import IdentityError
from orch.identity import ca as pki
from orch.identity import tokens
from orch.identity.errors import CAPinMismatchError, TokenError

TOKEN_RE = re.compile(r"ORCH-1-[0-9a-z]{50}-[0-9a-z]{25}")

ROOT = pki.create_root_ca()
OTHER = pki.create_root_ca()


def test_tokens_have_the_documented_shape_and_round_trip() -> None:
    pair = tokens.new_join_tokens(ROOT.cert)
    for token in (pair.worker, pair.manager):
        text = str(token)
        assert TOKEN_RE.fullmatch(text) and len(text) == 83
        assert tokens.parse_join_token(text) == token
        assert tokens.parse_join_token(f"  {text}\n") == token  # pasted
    assert pair.worker.secret != pair.manager.secret
    assert pair.worker.ca_digest == pair.manager.ca_digest


def test_repr_hides_the_secret() -> None:
    token = tokens.new_join_token(ROOT.cert)
    assert token.secret not in repr(token) and token.ca_digest in repr(token)


def test_digest_is_sha256_of_the_ca_der_in_base36() -> None:
    der = ROOT.cert.public_bytes(serialization.Encoding.DER)
    digest = tokens.ca_digest(ROOT.cert)
    assert len(digest) == 50
    assert int(digest, 36) == int.from_bytes(hashlib.sha256(der).digest(), "big")
    assert tokens.ca_digest(OTHER.cert) != digest


def test_base36_pads_and_refuses_what_does_not_fit() -> None:
    assert tokens.base36(0, 3) == "000" and tokens.base36(35, 2) == "0z"
    assert tokens.base36(2**256 - 1, 50) and tokens.base36(2**128 - 1, 25)
    with pytest.raises(ValueError):
        tokens.base36(36**3, 3)


def test_the_secret_that_matches_decides_the_role() -> None:
    pair = tokens.new_join_tokens(ROOT.cert)
    assert tokens.role_for_token(str(pair.worker), pair) is pki.Role.WORKER
    assert tokens.role_for_token(str(pair.manager), pair) is pki.Role.MANAGER
    assert pair.for_role(pki.Role.MANAGER) is pair.manager
    with pytest.raises(TokenError, match="no join token for role 'admin'"):
        pair.for_role(pki.Role.ADMIN)


def test_a_rotated_token_is_refused_and_the_other_role_keeps_working() -> None:
    pair = tokens.new_join_tokens(ROOT.cert)
    rotated = tokens.rotate_join_token(pair, pki.Role.WORKER)
    assert rotated.manager == pair.manager and rotated.worker != pair.worker
    with pytest.raises(TokenError, match="rotated"):
        tokens.role_for_token(str(pair.worker), rotated)
    assert tokens.role_for_token(str(rotated.worker), rotated) is pki.Role.WORKER
    assert tokens.role_for_token(str(pair.manager), rotated) is pki.Role.MANAGER


def test_a_token_of_another_ca_is_refused_with_the_reason() -> None:
    ours, theirs = tokens.new_join_tokens(ROOT.cert), tokens.new_join_tokens(OTHER.cert)
    with pytest.raises(TokenError, match="pins another CA"):
        tokens.role_for_token(str(theirs.worker), ours)
    # Same secret, other digest: still refused (the digest is part of the credential).
    forged = tokens.JoinToken(theirs.worker.ca_digest, ours.worker.secret)
    with pytest.raises(TokenError, match="pins another CA"):
        tokens.role_for_token(str(forged), ours)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SWMTKN-1-" + "a" * 50 + "-" + "b" * 25,
        "ORCH-2-" + "a" * 50 + "-" + "b" * 25,
        "ORCH-1-" + "a" * 49 + "-" + "b" * 25,
        "ORCH-1-" + "a" * 50 + "-" + "b" * 26,
        "ORCH-1-" + "A" * 50 + "-" + "b" * 25,
        "ORCH-1-" + "a" * 50 + "b" * 25,
    ],
)
def test_malformed_tokens_get_one_line_naming_the_format(text: str) -> None:
    with pytest.raises(TokenError) as err:
        tokens.parse_join_token(text)
    message = str(err.value)
    assert "\n" not in message and tokens.FORMAT in message
    assert message.startswith("malformed join token")
    if text:
        assert text not in message  # a near-miss token is still a secret


def test_a_non_string_is_a_token_error() -> None:
    with pytest.raises(TokenError):
        tokens.parse_join_token(None)  # type: ignore[arg-type]


@given(st.text())
def test_parsing_any_text_raises_nothing_but_token_error(text: str) -> None:
    try:
        token = tokens.parse_join_token(text)
    except TokenError:
        return
    assert str(token) == text.strip()


@given(st.from_regex(TOKEN_RE, fullmatch=True))
def test_every_well_formed_token_parses_and_round_trips(text: str) -> None:
    assert str(tokens.parse_join_token(text)) == text


@given(st.one_of(st.text(), st.from_regex(TOKEN_RE, fullmatch=True)))
def test_validating_any_text_raises_nothing_but_token_error(text: str) -> None:
    pair = tokens.new_join_tokens(ROOT.cert)
    with pytest.raises(TokenError):
        tokens.role_for_token(text, pair)


# --- CA pinning ------------------------------------------------------------------------


def test_the_pinned_root_is_accepted() -> None:
    token = tokens.new_join_token(ROOT.cert)
    assert tokens.pin_root_ca(pki.cert_pem(ROOT.cert), token) == ROOT.cert


def test_from_a_bundle_only_the_pinned_root_is_trusted() -> None:
    token = tokens.new_join_token(ROOT.cert)
    assert tokens.pin_root_ca(pki.cert_pem(OTHER.cert, ROOT.cert), token) == ROOT.cert


def test_a_ca_that_is_not_the_pinned_one_is_a_man_in_the_middle() -> None:
    token = tokens.new_join_token(ROOT.cert)
    with pytest.raises(CAPinMismatchError) as err:
        tokens.pin_root_ca(pki.cert_pem(OTHER.cert), token, source="10.0.0.1:4242")
    message = str(err.value)
    assert "man in the middle" in message and "10.0.0.1:4242" in message
    assert token.ca_digest in message and tokens.ca_digest(OTHER.cert) in message
    assert token.secret not in message
    assert isinstance(err.value, IdentityError)


def test_a_served_ca_that_is_not_pem_is_refused() -> None:
    token = tokens.new_join_token(ROOT.cert)
    with pytest.raises(IdentityError, match="not a PEM certificate bundle"):
        tokens.pin_root_ca(b"<html>captive portal</html>", token)


# --- the join proof (HMAC of the CSR with the token's secret) --------------------------

CSR_DER = pki.create_csr(pki.new_private_key()).public_bytes(serialization.Encoding.DER)


def test_a_proof_with_either_secret_grants_that_role() -> None:
    pair = tokens.new_join_tokens(ROOT.cert)
    for token, role in ((pair.worker, pki.Role.WORKER), (pair.manager, pki.Role.MANAGER)):
        proof = tokens.join_proof(token.secret, CSR_DER)
        assert len(proof) == tokens.PROOF_BYTES
        assert tokens.role_for_proof(token.ca_digest, CSR_DER, proof, pair) is role


def test_a_proof_is_bound_to_its_csr_and_a_rotated_secret_is_refused() -> None:
    pair = tokens.new_join_tokens(ROOT.cert)
    proof = tokens.join_proof(pair.worker.secret, CSR_DER)
    other_csr = pki.create_csr(pki.new_private_key()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(TokenError, match="not valid: it was rotated"):
        tokens.role_for_proof(pair.worker.ca_digest, other_csr, proof, pair)
    rotated = tokens.rotate_join_token(pair, pki.Role.WORKER)
    with pytest.raises(TokenError, match="not valid: it was rotated"):
        tokens.role_for_proof(pair.worker.ca_digest, CSR_DER, proof, rotated)


def test_a_proof_for_another_ca_or_malformed_is_refused_in_one_line() -> None:
    pair = tokens.new_join_tokens(ROOT.cert)
    other = tokens.new_join_tokens(OTHER.cert)
    proof = tokens.join_proof(other.worker.secret, CSR_DER)
    with pytest.raises(TokenError, match="pins another CA"):
        tokens.role_for_proof(other.worker.ca_digest, CSR_DER, proof, pair)
    with pytest.raises(TokenError, match="malformed join token digest"):
        tokens.role_for_proof("A" * 50, CSR_DER, proof, pair)
    with pytest.raises(TokenError, match="malformed join proof"):
        tokens.role_for_proof(pair.worker.ca_digest, CSR_DER, proof[:5], pair)
