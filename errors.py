"""orch's exception tree. Errors of the parts orch stands on (grpc, etcd, netlink, runc,
skopeo) are translated at the boundary with ``raise ... from exc``, so a user sees one
clear line and a developer still has the cause. Across gRPC, each kind travels as its
status code (``grpcerrors.py``, the one table), so it stays the same kind on the far side.

    OrchError
    ├── ValidationError      bad input: a manifest, a spec, a CLI argument
    ├── NotFoundError        no such service, task or node
    ├── ConflictError        a guarded etcd write lost its race; the caller may retry
    │   └── PreconditionError    the state forbids it (a network in use); retry once it changes
    ├── StoreError           etcd unreachable or failing
    ├── ImageError           an image could not be pulled or unpacked
    ├── ContainerError       the OCI runtime failed (create, start, kill, delete)
    ├── NetworkError         a netns, link, address or route could not be set up
    └── IdentityError        a join token, certificate, CA pin or key file was refused
        └── PermissionDeniedError  a verified caller may not make this call (its role,
                                   or its node was removed)
"""

from __future__ import annotations


class OrchError(Exception):
    """Base of every error orch raises on purpose."""


class ValidationError(OrchError):
    """Bad input. ``problems`` holds one line per problem, each naming where and what."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class NotFoundError(OrchError):
    pass


class ConflictError(OrchError):
    pass


class PreconditionError(ConflictError):
    """The object is not in a state the request needs: a network still in use, a rollback
    without a previous spec, logs of a task that does not run. Retrying helps only once
    that state changes."""


class StoreError(OrchError):
    pass


class ImageError(OrchError):
    pass


class ContainerError(OrchError):
    pass


class NetworkError(OrchError):
    pass


class IdentityError(OrchError):
    """A join token, certificate, CA pin or key file was refused; orch.identity has the
    subclasses a caller tells apart (a bad token, a CA that is not the pinned one, ...)."""


class PermissionDeniedError(IdentityError):
    """The caller's certificate verified, but it may not make this call: its role is not
    allowed to (an agent on the Control API), or its node was removed from the cluster."""
