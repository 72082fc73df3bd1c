"""Typed reads of webhook endpoints and deliveries, shared by the API and the pages."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.models import (
    WebhookDelivery,
    WebhookEndpoint,
)
from app.models.webhooks import DeliveryStatus


def webhook_endpoints(session: Session, project_id: int) -> Sequence[WebhookEndpoint]:
    return session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.project_id == project_id)
        .order_by(WebhookEndpoint.id)
    ).all()


def webhook_deliveries(
    session: Session,
    project_id: int,
    endpoint_id: int | None,
    status: DeliveryStatus | None,
    limit: int = 100,
) -> Sequence[WebhookDelivery]:
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.project_id == project_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    if endpoint_id is not None:
        stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    return session.scalars(stmt).all()


def deliveries_for_alert(
    session: Session, project_id: int, alert_id: int
) -> Sequence[WebhookDelivery]:
    """Deliveries whose message id names this alert: alert.opened.<id>, its reminders
    alert.opened.<id>.reminder.<day> and reopenings alert.opened.<id>.reopened.<n>, and
    alert.resolved.<id> (alert.resolved.<id>.reopened.<n> after a reopening)."""
    return session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.project_id == project_id,
            or_(
                WebhookDelivery.msg_id == f"alert.opened.{alert_id}",
                WebhookDelivery.msg_id.startswith(f"alert.opened.{alert_id}.", autoescape=True),
                WebhookDelivery.msg_id == f"alert.resolved.{alert_id}",
                WebhookDelivery.msg_id.startswith(
                    f"alert.resolved.{alert_id}.reopened.", autoescape=True
                ),
            ),
        )
        .order_by(WebhookDelivery.id)
    ).all()
