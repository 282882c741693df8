"""The errors the domain reports to its callers. Each carries the HTTP status the API answers
with (one handler, ``kernelwatch.api.errors``, maps them); the CLI and the workers catch them
by kind."""

from __future__ import annotations

from typing import Any


class KernelwatchError(Exception):
    """Base of every domain error. ``detail()`` is what the API puts in ``{"detail": ...}``."""

    status_code = 500
    headers: dict[str, str] | None = None

    def detail(self) -> Any:
        return str(self)


class NotFound(KernelwatchError, LookupError):
    status_code = 404


class Conflict(KernelwatchError):
    status_code = 409


class IllegalTransition(Conflict):
    """A state change the state machine does not allow."""


class Unauthorized(KernelwatchError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class Unavailable(KernelwatchError):
    """Something the server needs is missing or misconfigured; a retry later may succeed."""

    status_code = 503


class InvalidInput(KernelwatchError, ValueError):
    """A value the checks refused: answered 422 as a validation error of one field, in the
    shape pydantic's are (``[{"loc": [where, *loc], "msg": ..., "type": "value_error"}]``).
    Also a ValueError, which is what callers validating input already catch."""

    status_code = 422

    def __init__(self, loc: list[str], msg: str, where: str = "body") -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg
        self.where = where

    def detail(self) -> Any:
        return [{"loc": [self.where, *self.loc], "msg": self.msg, "type": "value_error"}]
