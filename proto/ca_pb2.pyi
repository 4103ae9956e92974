from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class JoinTokenRequest(_message.Message):
    __slots__ = ("role", "rotate")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ROTATE_FIELD_NUMBER: _ClassVar[int]
    role: str
    rotate: bool
    def __init__(self, role: _Optional[str] = ..., rotate: _Optional[bool] = ...) -> None: ...

class JoinTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class IssueAdminRequest(_message.Message):
    __slots__ = ("name", "csr_pem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    csr_pem: bytes
    def __init__(self, name: _Optional[str] = ..., csr_pem: _Optional[bytes] = ...) -> None: ...

class IssueAdminResponse(_message.Message):
    __slots__ = ("chain_pem", "roots_pem", "node_id")
    CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    ROOTS_PEM_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    chain_pem: bytes
    roots_pem: bytes
    node_id: str
    def __init__(self, chain_pem: _Optional[bytes] = ..., roots_pem: _Optional[bytes] = ..., node_id: _Optional[str] = ...) -> None: ...

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
