"""Webhook endpoints (secrets encrypted at rest, shown once), test sends and redelivery.
The sender that drains the outbox is sender.py; what goes into the outbox is outbox.py.

The audit log records where an endpoint points by its redacted URL (scheme and host,
app.core.redaction), never the whole URL nor a secret: the URL often embeds the receiver's
secret token, and audit rows are kept for good; the endpoint id (target_id) tells endpoints
apart."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import timedelta
from uuid import uuid4

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import audit, crypto
from app.core.auth import Principal
from app.core.db import get_owned, utcnow
from app.core.errors import NotFound, Unprocessable
from app.core.pagination import paginate
from app.core.redaction import redacted_url
from app.core.settings import Settings
from app.models import WebhookDelivery, WebhookEndpoint
from app.models.webhooks import DeliveryStatus, EndpointStatus
from app.webhooks.delivery import (
    SECRET_PREFIX,
    ForbiddenTarget,
    check_url,
    new_webhook_secret,
)
from app.webhooks.schemas import WebhookIn, WebhookPatch

TEST_EVENT = "webhook.test"


_MIN_SECRET_BYTES = 24

# How long a rotated-out secret still signs deliveries beside the new one: a day for the
# receiver's owner to deploy the new secret.
ROTATION_GRACE = timedelta(hours=24)


def _check_target(url: str, settings: Settings) -> None:
    try:
        check_url(url, settings.webhook_allow_private)
    except ForbiddenTarget as exc:
        raise Unprocessable(f"url: {exc}", field="url") from exc


def _check_secret(secret: str) -> None:
    try:
        raw = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise Unprocessable("secret: not base64 after the whsec_ prefix", field="secret") from exc
    if not secret.startswith(SECRET_PREFIX) or len(raw) < _MIN_SECRET_BYTES:
        raise Unprocessable(
            f"secret: expected whsec_ and at least {_MIN_SECRET_BYTES} base64-encoded bytes",
            field="secret",
        )


def create_endpoint(
    session: Session, principal: Principal, settings: Settings, body: WebhookIn
) -> tuple[WebhookEndpoint, str]:
    """-> (endpoint, secret). The secret exists in clear only in this answer."""
    _check_target(body.url, settings)
    secret = body.secret or new_webhook_secret()
    _check_secret(secret)
    endpoint = WebhookEndpoint(
        project_id=principal.project_id,
        url=body.url,
        events=sorted(set(body.events)),
        secret_encrypted=crypto.encrypt(settings, secret),
        description=body.description,
        status=EndpointStatus.active,
    )
    session.add(endpoint)
    session.flush()
    audit.record(
        session,
        principal,
        "webhook.created",
        "webhook",
        endpoint.id,
        {"url": redacted_url(endpoint.url), "events": endpoint.events},
    )
    session.commit()
    return endpoint, secret


def rotate_secret(
    session: Session, principal: Principal, settings: Settings, webhook_id: int
) -> tuple[WebhookEndpoint, str]:
    """-> (endpoint, new secret), the secret in clear in this answer only.

    The replaced secret keeps co-signing every delivery for ROTATION_GRACE, so receivers can
    switch to the new one at their pace; rotating again within it ends the older secret's
    grace at once (only the secret just replaced co-signs)."""
    endpoint = get_endpoint(session, principal.project_id, webhook_id)
    # Locked and re-read (PostgreSQL): of two rotations at once, the second replaces the
    # first's secret, which co-signs, instead of both replacing the same one.
    session.refresh(endpoint, with_for_update=True)
    secret = new_webhook_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = utcnow() + ROTATION_GRACE
    endpoint.secret_encrypted = crypto.encrypt(settings, secret)
    audit.record(
        session,
        principal,
        "webhook.secret_rotated",
        "webhook",
        endpoint.id,
        {"previous_secret_expires_at": endpoint.previous_secret_expires_at.isoformat()},
    )
    session.commit()
    return endpoint, secret


def get_endpoint(session: Session, project_id: int, webhook_id: int) -> WebhookEndpoint:
    return get_owned(session, WebhookEndpoint, project_id, webhook_id, "webhook")


def list_endpoints(
    session: Session, project_id: int, cursor: str | None, limit: int
) -> tuple[Sequence[WebhookEndpoint], str | None]:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.project_id == project_id)
    return paginate(session, stmt, WebhookEndpoint.id, cursor, limit)


def update_endpoint(
    session: Session, principal: Principal, settings: Settings, webhook_id: int, body: WebhookPatch
) -> WebhookEndpoint:
    endpoint = get_endpoint(session, principal.project_id, webhook_id)
    changes = body.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    if body.url is not None:
        _check_target(body.url, settings)
        endpoint.url = body.url
        changes["url"] = redacted_url(body.url)
    if body.events is not None:
        endpoint.events = sorted(set(body.events))
    if body.description is not None:
        endpoint.description = body.description
    if body.status is EndpointStatus.active:
        endpoint.status = EndpointStatus.active
        endpoint.consecutive_failures = 0
        endpoint.paused_reason = None
    elif body.status is EndpointStatus.paused:
        endpoint.status = EndpointStatus.paused
        endpoint.paused_reason = f"paused by {principal.actor}"
    audit.record(session, principal, "webhook.updated", "webhook", endpoint.id, changes)
    session.commit()
    return endpoint


def delete_endpoint(session: Session, principal: Principal, webhook_id: int) -> None:
    endpoint = get_endpoint(session, principal.project_id, webhook_id)
    audit.record(
        session,
        principal,
        "webhook.deleted",
        "webhook",
        endpoint.id,
        {"url": redacted_url(endpoint.url)},
    )
    session.delete(endpoint)
    session.commit()


def queue_test(session: Session, principal: Principal, webhook_id: int) -> WebhookDelivery:
    """A test message for this endpoint only, sent by the worker like any other delivery."""
    endpoint = get_endpoint(session, principal.project_id, webhook_id)
    data = {"webhook_id": endpoint.id, "message": "test delivery from Plumbline"}
    delivery = WebhookDelivery(
        project_id=principal.project_id,
        endpoint_id=endpoint.id,
        event_type=TEST_EVENT,
        msg_id=f"test.{uuid4().hex}",
        payload={"type": TEST_EVENT, "data": data},
        next_attempt_at=utcnow(),
    )
    session.add(delivery)
    session.flush()
    audit.record(session, principal, "webhook.test_queued", "webhook", endpoint.id)
    session.commit()
    return delivery


def list_deliveries(
    session: Session, project_id: int, webhook_id: int, cursor: str | None, limit: int
) -> tuple[Sequence[WebhookDelivery], str | None]:
    endpoint = get_endpoint(session, project_id, webhook_id)
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.project_id == project_id, WebhookDelivery.endpoint_id == endpoint.id
    )
    return paginate(session, stmt, WebhookDelivery.id, cursor, limit)


def redeliver(
    session: Session, principal: Principal, webhook_id: int, delivery_id: int
) -> WebhookDelivery:
    """Sends the same message (same webhook-id) again with a fresh attempt budget."""
    endpoint = get_endpoint(session, principal.project_id, webhook_id)
    delivery = session.get(WebhookDelivery, (principal.project_id, delivery_id))
    if delivery is None or delivery.endpoint_id != endpoint.id:
        raise NotFound(f"no delivery {delivery_id} for webhook {webhook_id}")
    delivery.status = DeliveryStatus.pending
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    delivery.claimed_until = None
    audit.record(
        session,
        principal,
        "webhook.redelivered",
        "webhook",
        endpoint.id,
        {"delivery_id": delivery.id},
    )
    session.commit()
    return delivery
