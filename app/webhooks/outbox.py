"""Domain events to webhook deliveries, in the emitting transaction (the outbox pattern)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import WebhookDelivery, WebhookEndpoint

EVENT_TYPES = (
    "alert.opened",
    "alert.resolved",
    "champion.changed",
    "gate.blocked",
    "canary.decided",
)


def emit(
    session: Session,
    project_id: int,
    event_type: str,
    msg_id: str,
    subject: str,
    data: dict[str, Any],
) -> int:
    """Queues one delivery per subscribed endpoint; `msg_id` is stable per transition so a
    repeated emit is a no-op and receivers can drop duplicates. Returns deliveries queued.
    A paused endpoint is queued for too: the sender holds its deliveries until it is
    re-enabled, so an alert raised while a receiver was down still reaches it.

    `subject` names the resource the event is about, as "<kind>:<id>" ("alert:12"): the
    sender sends one endpoint's events of one subject in the order they were emitted (a
    retried `alert.opened` is never overtaken by the `alert.resolved` after it), while other
    subjects go on. The envelope carries it beside the delivery's `sequence`."""
    endpoints = session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.project_id == project_id)
    ).all()
    queued = 0
    for endpoint in endpoints:
        if event_type not in endpoint.events:
            continue
        exists = session.scalar(
            select(WebhookDelivery.id).where(
                WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.msg_id == msg_id
            )
        )
        if exists is None:
            session.add(
                WebhookDelivery(
                    project_id=project_id,
                    endpoint_id=endpoint.id,
                    event_type=event_type,
                    msg_id=msg_id,
                    subject=subject,
                    payload={"type": event_type, "data": data},
                )
            )
            queued += 1
    return queued
