"""RFC 9457 problem details: every error the API answers has this one shape."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("plumbline.errors")

PROBLEM_JSON = "application/problem+json"
DATABASE_RETRY_AFTER_S = 5


class Problem(Exception):
    """Raised by services and routers; rendered as application/problem+json."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, status: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.extra = extra


class NotFound(Problem):
    status = 404
    title = "Not found"


class Conflict(Problem):
    status = 409
    title = "Conflict"


class Unprocessable(Problem):
    status = 422
    title = "Unprocessable content"


class Unauthorized(Problem):
    status = 401
    title = "Unauthorized"


class Forbidden(Problem):
    status = 403
    title = "Forbidden"


class PayloadTooLarge(Problem):
    status = 413
    title = "Payload too large"


class ServiceUnavailable(Problem):
    status = 503
    title = "Service unavailable"


def problem_response(
    status: int,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "malformed")
            errors.append({"field": "body", "message": f"invalid JSON: {reason}"})
        else:
            errors.append({"field": _field_path(err.get("loc", ())), "message": err.get("msg", "")})
    return errors


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        headers = exc.extra.pop("headers", None)
        return problem_response(exc.status, exc.title, exc.detail, headers=headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        detail = f"{first['field']}: {first['message']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return problem_response(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return problem_response(exc.status_code, "HTTP error", detail, headers=exc.headers)

    # Registered by class (not only under Exception) so Starlette's ExceptionMiddleware answers
    # them; the catch-all below runs in ServerErrorMiddleware, which re-raises after answering.
    @app.exception_handler(sa_exc.DBAPIError)
    @app.exception_handler(sa_exc.TimeoutError)
    @app.exception_handler(psycopg.Error)
    @app.exception_handler(OverflowError)
    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):
            log.warning("database unavailable: %s", type(exc).__name__)
            return problem_response(
                503,
                "Service unavailable",
                "the database is unavailable; retry shortly",
                headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
            )
        if isinstance(exc, sa_exc.DataError | OverflowError):
            # The last line of defence for values a schema let through that the database
            # cannot hold or compare: integers beyond its range (PostgreSQL's 32-bit ids,
            # SQLite's 64 bits) or NUL characters in text. The session rolls back: no write.
            return problem_response(
                422,
                "Invalid request",
                "a value in the request cannot be stored: an integer beyond the database's "
                "range or a NUL character in text",
            )
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "Internal error", "an unexpected error occurred")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means "the database cannot serve us right now" (server down or
    restarting, connection cut, pool exhausted, SQLite busy) rather than a bug in a query.
    Such failures are transient: requests answer 503 with Retry-After, background work keeps
    its claim and carries on when the database is back."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    transient = (
        sa_exc.OperationalError,  # connect refused/timed out, server terminated, SQLite busy
        sa_exc.InterfaceError,  # the connection was already closed under us
        sa_exc.TimeoutError,  # no pooled connection came free within pool_timeout
        psycopg.OperationalError,  # the same, when raised unwrapped by the driver
        psycopg.InterfaceError,
    )
    return isinstance(exc, transient)
