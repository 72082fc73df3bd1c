"""Sign in with an API key, sign out, switch project: the dashboard's session pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.core.auth import authenticate
from app.core.deps import SessionDep
from app.core.errors import Unauthorized
from app.core.ratelimit import RateLimited, enforce
from app.web import auth
from app.web.auth import ViewerDep
from app.web.rendering import (
    CsrfField,
    OptionalText,
    redirect,
    render,
    safe_next,
    web_router,
)

router = web_router()


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: OptionalText = None) -> HTMLResponse:
    return render(request, "web/login.html", {"next": safe_next(next), "error": None})


@router.post("/login", response_model=None)
def login(
    request: Request,
    session: SessionDep,
    csrf_token: CsrfField,
    api_key: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> HTMLResponse | RedirectResponse:
    auth.check_csrf(request, csrf_token)
    try:
        client_ip = request.client.host if request.client else "unknown"
        limit = request.app.state.settings.login_rate_per_minute
        enforce(request.app, "logins", limit, client_ip, "sign-in attempts from this address")
        principal = authenticate(session, api_key.strip())
    except (RateLimited, Unauthorized) as failed:
        context = {"next": safe_next(next), "error": failed.detail}
        page = render(request, "web/login.html", context, status_code=failed.status)
        page.headers.update(failed.extra.get("headers") or {})
        return page
    assert principal.key_id is not None
    auth.sign_in(request, principal.key_id)
    return redirect(safe_next(next))


@router.post("/logout")
def logout(request: Request, csrf_token: CsrfField) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    auth.clear_session(request)
    return redirect("/login")


@router.post("/switch-project")
def switch_project(
    request: Request, viewer: ViewerDep, csrf_token: CsrfField, key_id: Annotated[int, Form()]
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    auth.switch_to(request, key_id)
    return redirect("/")
