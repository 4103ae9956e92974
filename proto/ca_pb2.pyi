from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetRootCARequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRootCAResponse(_message.Message):
    __slots__ = ("roots_pem",)
    ROOTS_PEM_FIELD_NUMBER: _ClassVar[int]
    roots_pem: bytes
    def __init__(self, roots_pem: _Optional[bytes] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("token_digest", "csr_pem", "proof")
    TOKEN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    token_digest: str
    csr_pem: bytes
    proof: bytes
    def __init__(self, token_digest: _Optional[str] = ..., csr_pem: _Optional[bytes] = ..., proof: _Optional[bytes] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("chain_pem",)
    CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    chain_pem: bytes
    def __init__(self, chain_pem: _Optional[bytes] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("chain_pem", "roots_pem")
    CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    ROOTS_PEM_FIELD_NUMBER: _ClassVar[int]
    chain_pem: bytes
    roots_pem: bytes
    def __init__(self, chain_pem: _Optional[bytes] = ..., roots_pem: _Optional[bytes] = ...) -> None: ...
