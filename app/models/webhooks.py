"""Webhook endpoints and the delivery outbox (written in the transaction that emits)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import (
    Base,
    BigIntPK,
    CreatedAt,
    JSONType,
    TenantKeyed,
    postgresql_primary_key,
    str_enum,
    utcnow,
)


class EndpointStatus(StrEnum):
    active = "active"
    paused = "paused"


class DeliveryStatus(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"
    dead = "dead"


class WebhookEndpoint(CreatedAt, Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSONType)
    # Encrypted with the server's secret key: signing needs the secret itself, not a hash.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # The secret a rotation replaced, encrypted alike: deliveries are signed with it too until
    # `previous_secret_expires_at`, so receivers can switch secrets without a gap. Both or
    # neither.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None]
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[EndpointStatus] = mapped_column(
        str_enum(EndpointStatus, "endpoint_status"), default=EndpointStatus.active
    )
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_webhook_endpoints_project", "project_id"),
        CheckConstraint(
            "(previous_secret_encrypted IS NULL) = (previous_secret_expires_at IS NULL)",
            name="previous_secret_pair",
        ),
    )


class WebhookDelivery(TenantKeyed, CreatedAt, Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(32))
    # The webhook-id header: stable per (subject, transition) so receivers can drop repeats.
    msg_id: Mapped[str] = mapped_column(String(100))
    # What the event is about ("alert:12", "model:3"): the sender sends one endpoint's
    # deliveries of one subject in id order. NULL (test messages, rows queued before 0014)
    # orders nothing.
    subject: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.pending
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_response_excerpt: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[float | None]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint(
            "project_id", "endpoint_id", "msg_id", name="uq_webhook_deliveries_project_endpoint_msg"
        ),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_subject", "endpoint_id", "subject", "id"),
        postgresql_primary_key("project_id", "id"),
    )
