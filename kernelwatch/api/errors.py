"""Error responses. Every error has a message; validation errors are HTTP 422 with
``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`` whose ``msg`` names the field and
the allowed values, whether pydantic raised them or a check outside pydantic did."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from kernelwatch.core import gpus
from kernelwatch.core.errors import KernelwatchError
from kernelwatch.core.jobs import loc_from_message
from kernelwatch.core.spec import SweepSpec, Timing
from kernelwatch_harness import catalogue

log = logging.getLogger("kernelwatch.api")


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


def body_too_large_response(limit: int) -> JSONResponse:
    return JSONResponse(
        status_code=413,
        content={"detail": f"request body too large: the limit is {limit} bytes "
                           f"({limit / (1 << 20):g} MiB; KERNELWATCH_MAX_BODY_BYTES)"},
    )


_MODELS_BY_PREFIX: dict[str, type] = {"": SweepSpec, "timing": Timing}
# Allowed values for fields whose own message (missing, empty list) does not list them.
_ALLOWED: dict[str, tuple[str, ...]] = {
    "kernel": tuple(catalogue.KERNELS),
    "backends": catalogue.ALL_BACKENDS,
    "targets": gpus.BUILTIN_TAGS,
}


def clean_error(err: dict[str, Any], prefix: tuple[str | int, ...] = ()) -> dict[str, Any]:
    """A pydantic error as the API reports it: no echo of the input, the "Value error, "
    noise dropped, the field taken from the message when pydantic had none (model-level
    checks), every message starting with the field, and unknown fields, enums and a missing
    kernel answered with the allowed values."""
    loc = [*prefix, *err.get("loc", ())]
    msg = str(err.get("msg", ""))
    kind = str(err.get("type", "value_error"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    where = loc[:1] if loc and loc[0] in ("body", "query", "header", "path") else []
    inner = loc[len(where):]
    if not inner:  # a model-level check: core/spec.py puts the field first in its message
        inner = list(loc_from_message(msg))
        loc = [*where, *inner]
    field = ".".join(str(x) for x in inner) or (where[0] if where else "body")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden" and inner:
        model = _MODELS_BY_PREFIX.get(".".join(str(x) for x in inner[:-1]))
        allowed = f"; allowed: {', '.join(model.model_fields)}" if model else ""  # type: ignore[attr-defined]
        msg = f"unknown field {inner[-1]!r}{allowed}"
    elif kind == "enum" and "expected" in ctx:
        msg = (f"{field}: {err.get('input')!r} is not allowed; "
               f"allowed: {str(ctx['expected']).replace(' or ', ', ')}")
    elif kind == "missing":
        msg = f"{field}: field required"
    elif inner and not loc_from_message(msg):
        msg = f"{field}: {msg}"  # pydantic's own messages do not say which field
    if field in _ALLOWED and "allowed" not in msg:
        msg += f"; allowed: {', '.join(_ALLOWED[field])}"
    elif kind in ("bool_parsing", "bool_type") and "allowed" not in msg:
        msg += "; allowed: true, false"  # a switch (timing.cold_l2, crosscheck, ...)
    return {"loc": loc, "msg": msg, "type": kind}


def validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": errors})


def domain_error_response(exc: KernelwatchError) -> JSONResponse:
    """A domain error (core.errors) as its HTTP status and ``{"detail": ...}``."""
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail()},
                        headers=exc.headers)


class ErrorOut(BaseModel):
    """Every error answer: a message, or for 422 a list of field errors."""

    detail: str | list[dict[str, Any]]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked bearer token"},
    404: {"model": ErrorOut, "description": "Not found"},
    409: {"model": ErrorOut, "description": "Conflicts with the current state"},
    503: {"model": ErrorOut, "description": "The database, broker or configuration is "
                                            "not available"},
}

# A route that answers JSON by default and CSV with ``format=csv``, or 404.
CSV_OR_JSON_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
    404: ERROR_RESPONSES[404],
}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response([clean_error(dict(e)) for e in exc.errors()])

    @app.exception_handler(KernelwatchError)
    async def _domain(_: Request, exc: KernelwatchError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return body_too_large_response(exc.limit)

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error: %s", exc.orig)
        return JSONResponse(status_code=503,
                            content={"detail": f"database unavailable: {exc.orig}"})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # Never a bare 500: say what failed. Starlette re-raises the exception after this
        # response, so the traceback is still logged (and raised in tests): bugs stay visible.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500,
            content={"detail": f"internal error: {type(exc).__name__}: {exc}"},
        )
