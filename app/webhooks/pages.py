"""Webhook endpoints and their delivery log; redeliver."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.core.deps import SessionDep
from app.models.project import Role
from app.models.webhooks import DeliveryStatus
from app.web import auth
from app.web.auth import ViewerDep
from app.web.rendering import (
    CsrfField,
    choice_filter,
    redirect,
    render,
    require_role,
    web_router,
)
from app.webhooks import queries as webhook_queries
from app.webhooks import service as webhooks
from app.webhooks.schemas import WebhookOut

router = web_router()


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    endpoint: Annotated[int | None, Query(ge=1)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    context = {
        "viewer": viewer,
        "endpoints": [
            WebhookOut.seen_by(endpoint, viewer.principal.role)
            for endpoint in webhook_queries.webhook_endpoints(session, project_id)
        ],
        "deliveries": webhook_queries.webhook_deliveries(
            session, project_id, endpoint, choice_filter(DeliveryStatus, status, "status")
        ),
        "filters": {"endpoint": endpoint, "status": status},
    }
    return render(request, "webhooks/webhooks.html", context)


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
def redeliver(
    request: Request,
    webhook_id: int,
    delivery_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    csrf_token: CsrfField,
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.admin)
    webhooks.redeliver(session, viewer.principal, webhook_id, delivery_id)
    return redirect(f"/webhooks?endpoint={webhook_id}")
