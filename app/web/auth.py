"""Dashboard sessions: sign in with an API key, keep a signed cookie, guard forms with CSRF.

The cookie holds the ids of the keys a person signed in with (never the keys themselves), the
active one, and a CSRF token. It is signed, not encrypted: nothing in it is secret, and a
revoked key stops working on the next request because every request re-reads the key row."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.core.auth import Principal
from app.core.crypto import server_secret
from app.core.deps import SessionDep
from app.core.errors import Forbidden
from app.keys import queries as key_queries
from app.models.project import Role

SESSION_COOKIE = "plumbline_session"
SESSION_MAX_AGE_S = 12 * 3600
_SALT = "plumbline.web.session"


class LoginRequired(Exception):
    """Raised by page dependencies; the web route turns it into a redirect to /login."""


@dataclass
class WebSession:
    key_ids: list[int] = field(default_factory=list)
    active_key_id: int | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def as_dict(self) -> dict[str, Any]:
        return {"k": self.key_ids, "a": self.active_key_id, "c": self.csrf}


@dataclass(frozen=True)
class Viewer:
    """The signed-in person as pages see them: the active project and the others to switch to."""

    principal: Principal
    project_name: str
    key_name: str
    choices: list[key_queries.SessionKey]
    csrf: str

    def can(self, role: Role | str) -> bool:
        return self.principal.role.rank >= Role(role).rank


def _serializer(request: Request) -> URLSafeTimedSerializer:
    cached = getattr(request.app.state, "web_session_serializer", None)
    if cached is None:
        cached = URLSafeTimedSerializer(server_secret(request.app.state.settings), salt=_SALT)
        request.app.state.web_session_serializer = cached
    return cached


def read_session(request: Request) -> WebSession:
    """The request's session; a missing, forged or expired cookie gives a fresh anonymous one."""
    existing = getattr(request.state, "web_session", None)
    if existing is not None:
        return existing
    session = WebSession()
    cookie = request.cookies.get(SESSION_COOKIE)
    loaded = False
    if cookie:
        try:
            data = _serializer(request).loads(cookie, max_age=SESSION_MAX_AGE_S)
            session = WebSession(
                key_ids=[int(k) for k in data["k"]],
                active_key_id=int(data["a"]) if data["a"] is not None else None,
                csrf=str(data["c"]),
            )
            loaded = True
        except (BadSignature, KeyError, TypeError, ValueError):
            pass
    request.state.web_session = session
    request.state.web_session_dirty = not loaded
    return session


def save_session(request: Request, session: WebSession) -> None:
    request.state.web_session = session
    request.state.web_session_dirty = True


def clear_session(request: Request) -> None:
    save_session(request, WebSession())


def apply_session_cookie(request: Request, response: Response) -> None:
    """Called once per web response: writes the cookie only when the session changed. It is
    `Secure` when the request came over HTTPS or the public URL is HTTPS: behind a
    TLS-terminating proxy the service itself sees plain HTTP."""
    if not getattr(request.state, "web_session_dirty", False):
        return
    session: WebSession = request.state.web_session
    public_url: str = request.app.state.settings.public_url
    response.set_cookie(
        SESSION_COOKIE,
        _serializer(request).dumps(session.as_dict()),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https" or public_url.lower().startswith("https://"),
        path="/",
    )


def check_csrf(request: Request, token: str | None) -> None:
    expected = read_session(request).csrf
    if not token or not hmac.compare_digest(token, expected):
        raise Forbidden("the form expired or did not come from this site; reload and try again")


def sign_in(request: Request, key_id: int) -> None:
    """Adds a key to the session and makes its project the active one; rotates the CSRF token
    so a token seen before sign-in is worthless after it."""
    session = read_session(request)
    key_ids = [k for k in session.key_ids if k != key_id] + [key_id]
    save_session(request, WebSession(key_ids=key_ids, active_key_id=key_id))


def switch_to(request: Request, key_id: int) -> None:
    session = read_session(request)
    if key_id not in session.key_ids:
        raise Forbidden("that project is not part of this session; sign in with its key")
    session.active_key_id = key_id
    save_session(request, session)


def current_viewer(request: Request, db: SessionDep) -> Viewer:
    """The page dependency: the active key, re-checked against the database on every request."""
    web_session = read_session(request)
    choices = key_queries.session_keys(db, web_session.key_ids)
    active = next((k for k in choices if k.key_id == web_session.active_key_id), None)
    if active is None:
        if web_session.key_ids:
            clear_session(request)
        raise LoginRequired()
    if len(choices) != len(web_session.key_ids):  # drop revoked keys from the cookie
        web_session.key_ids = [k.key_id for k in choices]
        save_session(request, web_session)
    principal = Principal(
        project_id=active.project_id, key_id=active.key_id, role=active.role, actor=active.name
    )
    return Viewer(principal, active.project_name, active.name, choices, web_session.csrf)


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
