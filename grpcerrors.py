"""orch errors <-> gRPC status codes: the one table, for every place an error crosses gRPC.

A server (the Control API) ends a failed call with the status of its orch error; a client
(the CLI, a manager forwarding logs or exec to another) turns the status back into an
error of the same kind. So an error keeps its kind, and its code, across any number of
hops, and a person reads the message the first server wrote.

Only orch's own kinds are in the table. What else a client meets (an UNAVAILABLE from a
peer that does not answer, DEADLINE_EXCEEDED, UNIMPLEMENTED) is about the connection:
``error_of`` gives None for it, and each client words it with what it knows (which
address, which call).

An UNAVAILABLE that comes from etcd rather than from the manager carries the trailing
metadata ``orch-error: store-unavailable``: every manager shares that etcd, so a client
must not take it for this manager being down (the CLI would ask the next one, and multiply
the Store's timeout by the number of managers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import grpc
import grpc.aio

from orch import errors

CODES: tuple[tuple[type[errors.OrchError], grpc.StatusCode], ...] = (
    # before IdentityError, its base: a verified caller its role does not allow, or a
    # valid certificate of a removed node (CertificateDeniedError)
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    # a bad join token or proof, a refused certificate request, no verified caller
    (errors.IdentityError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    # before ConflictError, its base
    (errors.PreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ConflictError, grpc.StatusCode.ABORTED),
    (errors.StoreError, grpc.StatusCode.UNAVAILABLE),
)
"""Each orch error kind and its status code, subclasses first (the first match wins).
Any other OrchError leaves a server as INTERNAL."""

_KINDS = {code: kind for kind, code in CODES}

STORE_UNAVAILABLE = ("orch-error", "store-unavailable")
"""The trailing metadata entry that marks an UNAVAILABLE as etcd's, not the manager's."""


@dataclass(frozen=True)
class Status:
    """What a server ends a failed call with."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str], ...] = ()


def store_unavailable_message(exc: errors.StoreError) -> str:
    """The one line a user reads when etcd could not take or confirm a request."""
    return (
        f"the cluster store (etcd) is unavailable ({exc}): no quorum, or no member "
        "reachable; nothing was confirmed, retry once etcd is back"
    )


def status_of(exc: errors.OrchError) -> Status:
    """The status a server answers ``exc`` with."""
    if isinstance(exc, errors.StoreError):
        return Status(
            grpc.StatusCode.UNAVAILABLE, store_unavailable_message(exc), (STORE_UNAVAILABLE,)
        )
    code = next((c for kind, c in CODES if isinstance(exc, kind)), grpc.StatusCode.INTERNAL)
    return Status(code, str(exc))


async def abort(context: grpc.aio.ServicerContext, exc: errors.OrchError) -> NoReturn:
    """End the call with the status of ``exc``."""
    status = status_of(exc)
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
    raise AssertionError("context.abort returned")  # it raises; this tells the type checker


def code_of(exc: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call (sync or asyncio); UNKNOWN when it has none."""
    if isinstance(exc, grpc.Call | grpc.aio.AioRpcError):
        return exc.code()
    return grpc.StatusCode.UNKNOWN


def error_of(exc: grpc.RpcError) -> errors.OrchError | None:
    """The orch error a failed call reports, carrying the server's message as sent; None
    when its status is not one of orch's (see the module docstring)."""
    if not isinstance(exc, grpc.Call | grpc.aio.AioRpcError):
        return None
    code, details = exc.code(), exc.details() or ""
    kind = _KINDS.get(code)
    if kind is errors.StoreError and not _marked(exc):
        return None  # the manager itself is unavailable, not etcd
    if kind is errors.ValidationError:
        return errors.ValidationError(details.splitlines() or ["invalid argument"])
    if kind is None:
        return None
    return kind(details or code.name.lower())


def _marked(exc: grpc.Call | grpc.aio.AioRpcError) -> bool:
    # Sync calls give (key, value) namedtuples, asyncio ones a Metadata of (key, value).
    return any(tuple(entry) == STORE_UNAVAILABLE for entry in exc.trailing_metadata() or ())
