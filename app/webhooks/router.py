"""Webhook endpoints, test sends and the delivery log."""

from __future__ import annotations

from fastapi import Response, status

from app.core.deps import Admin, Paging, Reader, SessionDep, SettingsDep, api_router
from app.core.schemas import Page
from app.webhooks import service as webhooks
from app.webhooks.schemas import (
    DeliveryOut,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)

router = api_router("/api/v1", "webhooks")


@router.post("/webhooks", response_model=WebhookCreatedOut, status_code=status.HTTP_201_CREATED)
def create_webhook(
    body: WebhookIn, principal: Admin, session: SessionDep, settings: SettingsDep
) -> WebhookCreatedOut:
    """The signing secret is in this answer only; it is stored encrypted."""
    endpoint, secret = webhooks.create_endpoint(session, principal, settings, body)
    return WebhookCreatedOut.with_secret(endpoint, principal.role, secret)


@router.get("/webhooks", response_model=Page[WebhookOut])
def list_webhooks(principal: Reader, session: SessionDep, paging: Paging) -> Page[WebhookOut]:
    rows, cursor = webhooks.list_endpoints(
        session, principal.project_id, paging.cursor, paging.limit
    )
    return Page(items=[WebhookOut.seen_by(e, principal.role) for e in rows], next_cursor=cursor)


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut)
def get_webhook(webhook_id: int, principal: Reader, session: SessionDep) -> WebhookOut:
    endpoint = webhooks.get_endpoint(session, principal.project_id, webhook_id)
    return WebhookOut.seen_by(endpoint, principal.role)


@router.patch("/webhooks/{webhook_id}", response_model=WebhookOut)
def update_webhook(
    webhook_id: int,
    body: WebhookPatch,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
) -> WebhookOut:
    """Change url, events or description; status 'active' re-enables a paused endpoint."""
    endpoint = webhooks.update_endpoint(session, principal, settings, webhook_id, body)
    return WebhookOut.seen_by(endpoint, principal.role)


@router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: int, principal: Admin, session: SessionDep) -> Response:
    webhooks.delete_endpoint(session, principal, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/webhooks/{webhook_id}/rotate-secret", response_model=WebhookCreatedOut)
def rotate_webhook_secret(
    webhook_id: int, principal: Admin, session: SessionDep, settings: SettingsDep
) -> WebhookCreatedOut:
    """A new signing secret, in this answer only. The replaced one keeps signing deliveries
    beside it until `previous_secret_expires_at` (24 h), so receivers switch without a gap."""
    endpoint, secret = webhooks.rotate_secret(session, principal, settings, webhook_id)
    return WebhookCreatedOut.with_secret(endpoint, principal.role, secret)


@router.post(
    "/webhooks/{webhook_id}/test",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def test_webhook(webhook_id: int, principal: Admin, session: SessionDep) -> DeliveryOut:
    """Queues a signed test message; its outcome appears in the delivery log."""
    return DeliveryOut.model_validate(webhooks.queue_test(session, principal, webhook_id))


@router.get("/webhooks/{webhook_id}/deliveries", response_model=Page[DeliveryOut])
def list_deliveries(
    webhook_id: int, principal: Reader, session: SessionDep, paging: Paging
) -> Page[DeliveryOut]:
    rows, cursor = webhooks.list_deliveries(
        session, principal.project_id, webhook_id, paging.cursor, paging.limit
    )
    return Page(items=[DeliveryOut.model_validate(d) for d in rows], next_cursor=cursor)


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def redeliver(
    webhook_id: int, delivery_id: int, principal: Admin, session: SessionDep
) -> DeliveryOut:
    delivery = webhooks.redeliver(session, principal, webhook_id, delivery_id)
    return DeliveryOut.model_validate(delivery)
