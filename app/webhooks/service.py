"""Webhook endpoints (secrets encrypted at rest) and the outbox sender.

The sender claims due deliveries in a short transaction (FOR UPDATE SKIP LOCKED on
PostgreSQL, plus a `claimed_until` lease on both databases so a crashed sender's claims
expire), sends outside any transaction, then records each outcome in another short one.
Failed attempts back off exponentially with full jitter, honouring Retry-After
(webhook_delivery.next_delay); a delivery that exhausts MAX_ATTEMPTS is dead-lettered, one
refused for good (4xx, forbidden target) fails at once. An endpoint whose attempts have failed
PAUSE_AFTER_FAILURES times in a row is paused: its deliveries wait until it is re-enabled."""

from __future__ import annotations

import base64
import binascii
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.core import audit, crypto
from app.core.auth import Principal
from app.core.db import get_owned, utcnow
from app.core.errors import NotFound, Unprocessable
from app.core.pagination import paginate
from app.core.settings import Settings
from app.models import WebhookDelivery, WebhookEndpoint
from app.models.webhooks import DeliveryStatus, EndpointStatus
from app.webhooks.delivery import (
    MAX_ATTEMPTS,
    SECRET_PREFIX,
    DeliveryAttempt,
    ForbiddenTarget,
    check_url,
    envelope,
    new_webhook_secret,
    next_delay,
    send,
    sign,
)
from app.webhooks.schemas import WebhookIn, WebhookPatch

log = logging.getLogger("plumbline.webhooks")

BATCH_SIZE = 20
# Two full retry budgets in a row: a receiver that has been failing for hours, not a blip.
PAUSE_AFTER_FAILURES = 2 * MAX_ATTEMPTS
TEST_EVENT = "webhook.test"
_MIN_SECRET_BYTES = 24
_rng = random.SystemRandom()


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
        {"url": endpoint.url, "events": endpoint.events},
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
        session, principal, "webhook.deleted", "webhook", endpoint.id, {"url": endpoint.url}
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
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    return paginate(session, stmt, WebhookDelivery.id, cursor, limit)


def redeliver(
    session: Session, principal: Principal, webhook_id: int, delivery_id: int
) -> WebhookDelivery:
    """Sends the same message (same webhook-id) again with a fresh attempt budget."""
    endpoint = get_endpoint(session, principal.project_id, webhook_id)
    delivery = session.get(WebhookDelivery, delivery_id)
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


@dataclass(frozen=True)
class _Claimed:
    delivery_id: int
    url: str
    secret: str
    msg_id: str
    body: bytes


def deliver_webhooks(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """One batch of due deliveries; True when it found work (the loop polls again at once)."""
    claimed = _claim(sessions, settings)
    for item in claimed:
        headers = sign(item.secret, item.msg_id, utcnow(), item.body)
        attempt = send(
            item.url, headers, item.body, settings.webhook_timeout_s, settings.webhook_allow_private
        )
        _record(sessions, item.delivery_id, attempt)
    return bool(claimed)


def _claim(sessions: sessionmaker[Session], settings: Settings) -> list[_Claimed]:
    now = utcnow()
    lease = timedelta(seconds=2 * settings.webhook_timeout_s + 30)
    with sessions() as session:
        rows = session.execute(
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == DeliveryStatus.pending,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
                WebhookEndpoint.status == EndpointStatus.active,
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(BATCH_SIZE)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        ).all()
        claimed = []
        for delivery, endpoint in rows:
            try:
                secret = crypto.decrypt(settings, endpoint.secret_encrypted)
            except crypto.SecretUnreadable as exc:
                delivery.status = DeliveryStatus.failed
                delivery.last_error = str(exc)
                continue
            delivery.claimed_until = now + lease
            data = delivery.payload.get("data", {})
            claimed.append(
                _Claimed(
                    delivery.id,
                    endpoint.url,
                    secret,
                    delivery.msg_id,
                    envelope(delivery.event_type, data, delivery.created_at),
                )
            )
        session.commit()
    return claimed


def _record(sessions: sessionmaker[Session], delivery_id: int, attempt: DeliveryAttempt) -> None:
    now = utcnow()
    with sessions() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:  # endpoint deleted meanwhile
            return
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        assert endpoint is not None
        delivery.attempts += 1
        delivery.claimed_until = None
        delivery.last_status_code = attempt.status_code
        delivery.last_response_excerpt = attempt.response_excerpt
        delivery.last_error = attempt.error
        delivery.last_duration_ms = attempt.duration_ms
        if attempt.ok:
            delivery.status = DeliveryStatus.succeeded
            delivery.delivered_at = now
            endpoint.consecutive_failures = 0
        else:
            _after_failure(delivery, endpoint, attempt, now)
        session.commit()


def _after_failure(
    delivery: WebhookDelivery, endpoint: WebhookEndpoint, attempt: DeliveryAttempt, now: datetime
) -> None:
    if attempt.retryable and delivery.attempts < MAX_ATTEMPTS:
        delay = next_delay(delivery.attempts, attempt.retry_after_s, _rng)
        delivery.next_attempt_at = now + timedelta(seconds=delay)
    else:
        delivery.status = DeliveryStatus.dead if attempt.retryable else DeliveryStatus.failed
    endpoint.consecutive_failures += 1
    if (
        endpoint.consecutive_failures >= PAUSE_AFTER_FAILURES
        and endpoint.status is EndpointStatus.active
    ):
        endpoint.status = EndpointStatus.paused
        endpoint.paused_reason = (
            f"paused after {endpoint.consecutive_failures} failed attempts in a row; "
            f"last: {attempt.error or attempt.status_code}"
        )
        log.warning("webhook endpoint %s paused", endpoint.id)
