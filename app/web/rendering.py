"""Templates, filters, and the route class every dashboard page uses.

`HtmlRoute` is where pages differ from the API: a missing login becomes a redirect, a
`Problem` becomes an HTML error page instead of problem+json, and every response carries the
security headers and (when it changed) the session cookie."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import StringConstraints

from app.core.errors import Forbidden, Problem, Unprocessable, validation_errors
from app.core.resources import resource_dir
from app.models.project import Role
from app.web import auth
from app.web.figures import percent_text

templates = Jinja2Templates(directory=resource_dir("templates"))
templates.env.autoescape = True

SECURITY_HEADERS = {
    # Plotly injects its own <style> elements, hence 'unsafe-inline' for styles only;
    # scripts come from our origin alone, and no page may be framed.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


# Parameters every page shares: bounded text, the CSRF form field, the page size of tables.
PageText = Annotated[str, StringConstraints(max_length=200)]
OptionalText = Annotated[str | None, Query(max_length=200)]
CsrfField = Annotated[str, Form(max_length=200)]
PAGE_SIZE = 50


Choice = TypeVar("Choice", bound=Enum)


def choice_filter(choices: type[Choice], value: str | None, field: str) -> Choice | None:
    """A page's select filter: empty (the form's "all" option sends `field=`) means none, and
    an unknown value is a 422 naming the field rather than a database error."""
    if not value:
        return None
    try:
        return choices(value)
    except ValueError:
        known = ", ".join(str(member.value) for member in choices)
        raise Unprocessable(f"{field}: must be one of {known}", field=field) from None


def date_window(start: date | None, end: date | None, default_days: int) -> tuple[date, date]:
    """A page's [from, to] days: defaults to the last `default_days`, at most two years."""
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=default_days - 1)
    if start > end:
        raise Unprocessable("from: the start of the range is after its end", field="from")
    if (end - start).days > 731:
        raise Unprocessable("from: at most two years at a time", field="from")
    return start, end


def require_role(viewer: auth.Viewer, role: Role) -> None:
    if not viewer.can(role):
        raise Forbidden(f"this needs a '{role}' key; you signed in with '{viewer.principal.role}'")


NO_VALUE = "\u2013"  # an en dash: the table cell has no value


def _percent(value: float | None, digits: int = 1) -> str:
    return NO_VALUE if value is None else percent_text(value, digits)


def _number(value: float | None, digits: int = 3) -> str:
    return NO_VALUE if value is None else f"{value:.{digits}f}"


def _when(value: datetime | date | None) -> str:
    if value is None:
        return NO_VALUE
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def _query(params: dict[str, Any], **changes: Any) -> str:
    """The current filters with some changed: builds pagination and filter links."""
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "", False)})


templates.env.filters.update(
    percent=_percent, number=_number, when=_when, urlpart=lambda v: quote(str(v), safe="")
)
templates.env.globals.update(query=_query)


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {**context, "csrf_token": auth.read_session(request).csrf},
        status_code=status_code,
    )


def redirect(url: str) -> RedirectResponse:
    """After a form POST: 303 so the browser follows with GET."""
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Only same-site paths: `//evil.example` and absolute URLs are open redirects."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


class HtmlRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def html_handler(request: Request) -> Response:
            response: Response
            try:
                response = await handler(request)
            except auth.LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = redirect("/login?" + urlencode({"next": target}))
            except Problem as problem:
                response = _error_page(request, problem.status, problem.title, problem.detail)
            except RequestValidationError as invalid:
                detail = "; ".join(
                    f"{e['field']}: {e['message']}" for e in validation_errors(invalid)
                )
                response = _error_page(request, 422, "Invalid request", detail)
            auth.apply_session_cookie(request, response)
            response.headers.update(SECURITY_HEADERS)
            return response

        return html_handler


def _error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return render(
        request, "web/error.html", {"status": status, "title": title, "detail": detail}, status
    )


def web_router() -> APIRouter:
    return APIRouter(route_class=HtmlRoute, include_in_schema=False)
