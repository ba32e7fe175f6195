"""The service's errors as HTTP answers: 401 (with `WWW-Authenticate`), 403, 429 (with `Retry-After`), 422 naming
the field, 404 for unknown users or versions, 409 for a stale revision or a cancelled compile, 502 for MLflow."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from persona_agent.compiling import CompileCancelledError
from persona_agent.core.errors import (
    InvalidInputError,
    PersonaAgentError,
    PersonaNotFoundError,
    TrackingError,
    UnknownUserError,
    VersionConflictError,
)
from persona_agent.service.auth import AuthError, ForbiddenError
from persona_agent.service.limits import QuotaExceededError


def reply(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _auth(request: Request, exc: AuthError) -> JSONResponse:
    return reply(401, str(exc), {"WWW-Authenticate": "Bearer"})


async def _forbidden(request: Request, exc: ForbiddenError) -> JSONResponse:
    return reply(403, str(exc))


async def _quota(request: Request, exc: QuotaExceededError) -> JSONResponse:
    return reply(429, str(exc), {"Retry-After": str(exc.retry_after)})


async def _invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
    where = "path" if exc.field in request.path_params else "query" if exc.field in request.query_params else "body"
    parts = [int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", exc.field) if p]
    loc = parts if parts[:1] in (["body"], ["path"], ["query"]) else [where, *parts]
    return reply(422, [{"loc": loc, "msg": exc.reason, "type": "invalid_input"}])


async def _domain(request: Request, exc: PersonaAgentError) -> JSONResponse:
    if isinstance(exc, UnknownUserError | PersonaNotFoundError):
        return reply(404, str(exc))
    if isinstance(exc, VersionConflictError | CompileCancelledError):
        return reply(409, str(exc))
    if isinstance(exc, TrackingError):
        return reply(502, str(exc))
    return reply(500, f"{type(exc).__name__}: {exc}")


def add_error_handlers(app: FastAPI) -> None:
    """Register the handlers (Starlette picks the handler of the nearest class in the error's MRO)."""
    app.add_exception_handler(AuthError, _auth)
    app.add_exception_handler(ForbiddenError, _forbidden)
    app.add_exception_handler(QuotaExceededError, _quota)
    app.add_exception_handler(InvalidInputError, _invalid)
    app.add_exception_handler(PersonaAgentError, _domain)
