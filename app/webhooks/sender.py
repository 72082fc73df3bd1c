"""The outbox sender, a background loop.

It claims due deliveries in a short transaction (FOR UPDATE SKIP LOCKED on PostgreSQL, plus a
`claimed_until` lease on both databases so a crashed sender's claims expire), sends outside any
transaction, then records each outcome in another short one. A batch is sent one delivery after
another, so slow receivers can outlast the lease of the deliveries still waiting: each lease is
renewed just before its send, and only if it is still the one this sender took (its
`claimed_until` is the claim's token); a delivery another sender took over meanwhile is left to
it, and an outcome is recorded only under the claim it was sent with, so no message goes out
twice nor counts another sender's attempt. One endpoint's deliveries about one subject go
out in the order they were queued: the claim skips a delivery while an earlier one of its
subject is still pending (see `_claim`). Failed attempts back off
exponentially with full jitter, honouring Retry-After (delivery.next_delay); a delivery that
exhausts MAX_ATTEMPTS is dead-lettered, one refused for good (4xx, forbidden target) fails at
once. An endpoint whose attempts have failed PAUSE_AFTER_FAILURES times in a row is paused:
its deliveries wait until it is re-enabled."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from app.core import crypto
from app.core.db import utcnow
from app.core.settings import Settings
from app.models import WebhookDelivery, WebhookEndpoint
from app.models.webhooks import DeliveryStatus, EndpointStatus
from app.webhooks.delivery import (
    MAX_ATTEMPTS,
    DeliveryAttempt,
    envelope,
    next_delay,
    send,
    sign,
)

log = logging.getLogger("plumbline.webhooks")

BATCH_SIZE = 20


# Two full retry budgets in a row: a receiver that has been failing for hours, not a blip.
PAUSE_AFTER_FAILURES = 2 * MAX_ATTEMPTS


_rng = random.SystemRandom()


@dataclass(frozen=True)
class _Claimed:
    project_id: int
    delivery_id: int
    url: str
    secret: str
    previous_secret: str | None
    msg_id: str
    body: bytes
    claimed_until: datetime


def deliver_webhooks(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """One batch of due deliveries; True when it found work (the loop polls again at once)."""
    claimed = _claim(sessions, settings)
    for item in claimed:
        held = _renew(sessions, item, _lease(settings))
        if held is None:
            continue
        headers = sign(
            held.secret, held.msg_id, utcnow(), held.body, previous_secret=held.previous_secret
        )
        attempt = send(
            held.url, headers, held.body, settings.webhook_timeout_s, settings.webhook_allow_private
        )
        _record(sessions, held, attempt)
    return bool(claimed)


def _lease(settings: Settings) -> timedelta:
    """Long enough for one attempt (connect and read timeouts) with room to record it."""
    return timedelta(seconds=2 * settings.webhook_timeout_s + 30)


def _claim(sessions: sessionmaker[Session], settings: Settings) -> list[_Claimed]:
    """Due deliveries, each the oldest still pending of its subject at its endpoint.

    A delivery waits while an earlier one (lower id, so emitted before it) of the same subject
    to the same endpoint is pending, retries included, whether or not that one is due or
    leased; once it succeeds or is given up (dead, failed), the next goes. So a batch holds at
    most one delivery per (endpoint, subject), and the next is claimed only after the previous
    outcome is committed: one subject's events reach a receiver in order, while other subjects
    are never held up. Deliveries without a subject are never held."""
    now = utcnow()
    lease = _lease(settings)
    earlier = aliased(WebhookDelivery)
    earlier_pending = (
        select(earlier.id)
        .where(
            earlier.project_id == WebhookDelivery.project_id,  # implied; names the shard
            earlier.endpoint_id == WebhookDelivery.endpoint_id,
            earlier.subject == WebhookDelivery.subject,
            earlier.id < WebhookDelivery.id,
            earlier.status == DeliveryStatus.pending,
        )
        .exists()
    )
    with sessions() as session:
        rows = session.execute(
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == DeliveryStatus.pending,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
                WebhookEndpoint.status == EndpointStatus.active,
                ~earlier_pending,
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(BATCH_SIZE)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        ).all()
        claimed = []
        for delivery, endpoint in rows:
            try:
                secret = crypto.decrypt(settings, endpoint.secret_encrypted)
                previous_secret = _previous_secret(settings, endpoint, now)
            except crypto.SecretUnreadable as exc:
                delivery.status = DeliveryStatus.failed
                delivery.last_error = str(exc)
                continue
            delivery.claimed_until = now + lease
            data = delivery.payload.get("data", {})
            claimed.append(
                _Claimed(
                    delivery.project_id,
                    delivery.id,
                    endpoint.url,
                    secret,
                    previous_secret,
                    delivery.msg_id,
                    envelope(
                        delivery.event_type,
                        data,
                        delivery.created_at,
                        subject=delivery.subject,
                        sequence=delivery.id,
                    ),
                    now + lease,
                )
            )
        session.commit()
    return claimed


def _previous_secret(settings: Settings, endpoint: WebhookEndpoint, now: datetime) -> str | None:
    """The secret a rotation replaced, while its grace period lasts (it co-signs until then)."""
    expires_at = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted is None or expires_at is None or expires_at <= now:
        return None
    return crypto.decrypt(settings, endpoint.previous_secret_encrypted)


def _renew(sessions: sessionmaker[Session], item: _Claimed, lease: timedelta) -> _Claimed | None:
    """A fresh lease for the send about to start, or None when the claim is no longer ours
    (it expired and another sender took the delivery, or it was redelivered or deleted)."""
    until = utcnow() + lease
    with sessions() as session:
        delivery = session.get(
            WebhookDelivery, (item.project_id, item.delivery_id), with_for_update=True
        )
        if (
            delivery is None
            or delivery.status is not DeliveryStatus.pending
            or delivery.claimed_until != item.claimed_until
        ):
            return None
        delivery.claimed_until = until
        session.commit()
    return replace(item, claimed_until=until)


def _record(sessions: sessionmaker[Session], item: _Claimed, attempt: DeliveryAttempt) -> None:
    now = utcnow()
    with sessions() as session:
        delivery = session.get(
            WebhookDelivery, (item.project_id, item.delivery_id), with_for_update=True
        )
        if delivery is None or delivery.claimed_until != item.claimed_until:
            return  # deleted, redelivered or taken over by another sender meanwhile
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
