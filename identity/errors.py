"""The identity errors a caller tells apart: each maps to one answer on the wire (a bad
token is UNAUTHENTICATED, a denied certificate PERMISSION_DENIED, a CA that is not the
pinned one stops a join before anything is sent)."""

from __future__ import annotations

from orch.errors import IdentityError, PermissionDeniedError


class TokenError(IdentityError):
    """A join token is malformed, rotated, or pins another CA."""


class CAPinMismatchError(IdentityError):
    """The CA certificate a manager served is not the one the join token pins."""


class CertificateDeniedError(PermissionDeniedError):
    """The peer's certificate is valid but its node was removed or the serial revoked."""
