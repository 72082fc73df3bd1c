"""Dependencies every router shares: the session, the caller, paging."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from app.core.auth import Principal, authenticate
from app.core.db import get_session
from app.core.errors import PROBLEM_JSON
from app.core.links import Links
from app.core.ratelimit import enforce
from app.core.schemas import ProblemDetail
from app.core.settings import Settings
from app.models.project import Role

SessionDep = Annotated[Session, Depends(get_session)]


def api_key_from(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("x-api-key") or request.headers.get("api_key")


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def require(role: Role) -> Callable[[Request, Session], Principal]:
    def dependency(request: Request, session: SessionDep) -> Principal:
        principal = authenticate(session, api_key_from(request))
        principal.require(role)
        if request.method not in SAFE_METHODS:
            settings: Settings = request.app.state.settings
            key = (
                ("key", principal.key_id) if principal.key_id else ("project", principal.project_id)
            )
            enforce(
                request.app, "writes", settings.write_rate_per_minute, key, "writes with this key"
            )
        return principal

    # Read by the authorization test to prove every API route demands a role.
    dependency.required_role = role  # type: ignore[attr-defined]
    return dependency


Reader = Annotated[Principal, Depends(require(Role.read))]
Writer = Annotated[Principal, Depends(require(Role.write))]
Admin = Annotated[Principal, Depends(require(Role.admin))]


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_links(request: Request) -> Links:
    return Links.of(request.app.state.settings)


LinksDep = Annotated[Links, Depends(get_links)]


class PageParams:
    def __init__(
        self,
        request: Request,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    ) -> None:
        settings: Settings = request.app.state.settings
        self.cursor = cursor
        self.limit = min(limit or settings.default_page_size, settings.max_page_size)


Paging = Annotated[PageParams, Depends()]


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def _finite_float(literal: str) -> float:
    """1e400 is valid JSON text but no double: Python reads it as infinity, which SQLite
    stores as null and PostgreSQL refuses late with a misleading message."""
    value = float(literal)
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"number {literal[:40]} is out of range", literal, 0)
    return value


class StrictJSONRequest(Request):
    """Python's json module accepts NaN and Infinity, and reads 1e400 as infinity; JSON (and
    PostgreSQL's jsonb) have neither."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            raw = await self.body()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError(
                    f"body is not valid UTF-8 (byte {exc.start})", "", exc.start
                ) from exc
            try:
                self._json = json.loads(
                    text, parse_constant=_reject_constant, parse_float=_finite_float
                )
            except RecursionError as exc:
                raise json.JSONDecodeError("JSON nested too deeply", text[:0], 0) from exc
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


def _problem(description: str) -> dict[str, Any]:
    schema = ProblemDetail.model_json_schema()
    return {"description": description, "content": {PROBLEM_JSON: {"schema": schema}}}


# The errors any API route may answer, documented once: every one is RFC 9457 problem+json.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("Malformed request, e.g. a cursor this API did not issue"),
    401: _problem("No API key, or a revoked or unknown one"),
    403: _problem("The key's role is too weak for this operation"),
    404: _problem("No such resource in the key's project"),
    409: _problem("The request conflicts with the current state"),
    415: _problem("A body in a media type this operation does not take"),
    413: _problem("The body is larger than PLUMBLINE_MAX_BODY_BYTES (or a batch limit)"),
    422: _problem("Invalid request; `errors` names each field"),
    429: _problem("Rate limit or ingest capacity reached; retry after Retry-After seconds"),
    503: _problem("The database is unavailable; retry after Retry-After seconds"),
}


def api_router(
    prefix: str, tag: str, responses: dict[int | str, dict[str, Any]] | None = None
) -> APIRouter:
    """`responses` replaces the problem+json error documentation (the OTLP receiver's differ)."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        route_class=StrictJSONRoute,
        responses=PROBLEM_RESPONSES if responses is None else responses,
    )
