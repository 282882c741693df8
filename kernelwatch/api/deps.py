"""Request dependencies: one database session per request, committed at the boundary, and the
bearer-token checks (``CurrentToken`` for writes; ``ReadAccess`` for reads, open unless
``KERNELWATCH_REQUIRE_TOKEN_FOR_READS`` is set)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from kernelwatch.core.db import session_scope
from kernelwatch.core.errors import Unauthorized
from kernelwatch.core.models import Token
from kernelwatch.core.settings import get_settings
from kernelwatch.core.tokens import verify_token


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


# scope="function": the commit happens before the response is sent, so a client never sees
# a success for a transaction that then failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

# Row ids are 64-bit: a larger number is a 422 here, not a database error (500) later.
MAX_ROW_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]

_bearer = HTTPBearer(auto_error=False, description="A token from `kernelwatch token create`.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(msg: str) -> Unauthorized:
    return Unauthorized(msg)


def require_token(session: SessionDep, creds: BearerDep) -> Token:
    if creds is None or not creds.credentials:
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>' "
                            "(create one with `kernelwatch token create --name NAME`)")
    token = verify_token(session, creds.credentials)
    if token is None:
        raise _unauthorized("invalid or revoked token")
    return token


def read_access(session: SessionDep, creds: BearerDep) -> Token | None:
    if not get_settings().require_token_for_reads:
        return None
    return require_token(session, creds)


CurrentToken = Annotated[Token, Depends(require_token)]
ReadAccess = Annotated[Token | None, Depends(read_access)]
