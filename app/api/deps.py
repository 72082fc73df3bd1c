"""Dependencies every router shares: the session, the caller, paging."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from app.db import get_session
from app.models.project import Role
from app.services import keys
from app.services.keys import Principal
from app.settings import Settings

SessionDep = Annotated[Session, Depends(get_session)]


def api_key_from(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("x-api-key") or request.headers.get("api_key")


def require(role: Role) -> Callable[[Request, Session], Principal]:
    def dependency(request: Request, session: SessionDep) -> Principal:
        principal = keys.authenticate(session, api_key_from(request))
        principal.require(role)
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


class StrictJSONRequest(Request):
    """Python's json module accepts NaN and Infinity; JSON (and PostgreSQL's jsonb) do not."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            raw = await self.body()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError(
                    f"body is not valid UTF-8 (byte {exc.start})", "", exc.start
                ) from exc
            self._json = json.loads(text, parse_constant=_reject_constant)
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


def api_router(prefix: str, tag: str) -> APIRouter:
    return APIRouter(prefix=prefix, tags=[tag], route_class=StrictJSONRoute)
