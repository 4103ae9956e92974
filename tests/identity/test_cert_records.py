"""The CA's record of each issued certificate (the replay guard of Join and Renew) lives
only as long as the certificate can be valid: the records stay bounded however often
nodes renew."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orch.errors import IdentityError
from orch.identity import ca as pki
from orch.manager.ca.records import CERTS_PREFIX, key_digest, record_certificate
from orch.manager.state.memstore import MemoryStore


async def test_a_record_lasts_as_long_as_its_certificate_and_no_longer() -> None:
    store = MemoryStore()
    authority = pki.create_root_ca()
    key = pki.new_private_key()
    cert = pki.issue_certificate(
        authority,
        pki.create_csr(key),
        node_id=pki.new_id(),
        role=pki.Role.WORKER,
        validity=timedelta(minutes=1),
    )
    await record_certificate(store, cert)
    with pytest.raises(IdentityError, match="used once"):  # the replay guard holds
        await record_certificate(store, cert)
    key_name = CERTS_PREFIX + key_digest(cert)
    # Valid for a minute from now, accepted for the clock skew (5 min) after that.
    store.advance(timedelta(minutes=5, seconds=50).total_seconds())
    assert await store.get_key(key_name) is not None
    store.advance(timedelta(seconds=20).total_seconds())
    assert await store.get_key(key_name) is None
