"""Webhook endpoints and their delivery log: the public contract."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AliasChoices, Field, StringConstraints, ValidationInfo, field_validator

from app.core.redaction import URL_MASK, redacted_url
from app.core.schemas import OrmModel, StrictModel
from app.models.project import Role
from app.models.webhooks import DeliveryStatus, EndpointStatus

EventType = Literal[
    "alert.opened", "alert.resolved", "champion.changed", "gate.blocked", "canary.decided"
]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Description = Annotated[str, StringConstraints(max_length=2000)]


class WebhookIn(StrictModel):
    url: Url
    events: list[EventType] = Field(min_length=1, max_length=10)
    secret: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="Standard Webhooks secret (whsec_...); generated when absent."
    )
    description: Description | None = None


class WebhookPatch(StrictModel):
    url: Url | None = None
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=10)
    description: Description | None = None
    status: EndpointStatus | None = Field(
        default=None, description="'active' re-enables a paused endpoint; 'paused' pauses it."
    )


VIEWER_ROLE = "viewer_role"
"""Validation context key: the role of the key the answer is for (`WebhookOut.seen_by`)."""


class WebhookOut(OrmModel):
    """An endpoint as a key of `role` sees it (`seen_by`): the URL whole for admin keys, who
    set it, and redacted for read and write keys (`redacted_url`), since it often embeds a
    secret token. Built without a role (plain `model_validate`), the URL is redacted."""

    id: int
    url: str = Field(
        description="The whole URL for admin keys; for other keys scheme and host only, "
        f"then '/{URL_MASK}'."
    )
    events: list[str]
    description: str | None
    status: EndpointStatus
    paused_reason: str | None
    consecutive_failures: int
    previous_secret_expires_at: datetime | None = Field(
        description="After a secret rotation: until then the replaced secret co-signs too."
    )
    created_at: datetime

    @field_validator("url")
    @classmethod
    def _url_for_viewer(cls, url: str, info: ValidationInfo) -> str:
        role = (info.context or {}).get(VIEWER_ROLE)
        return url if role is Role.admin else redacted_url(url)

    @classmethod
    def seen_by(cls, endpoint: Any, role: Role) -> Self:
        return cls.model_validate(endpoint, context={VIEWER_ROLE: role})


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="Shown once: verify signatures with it.")

    @classmethod
    def with_secret(cls, endpoint: Any, role: Role, secret: str) -> Self:
        seen = WebhookOut.seen_by(endpoint, role).model_dump()
        return cls.model_validate({**seen, "secret": secret}, context={VIEWER_ROLE: role})


class DeliveryOut(OrmModel):
    id: int
    webhook_id: int = Field(validation_alias=AliasChoices("endpoint_id", "webhook_id"))
    event_type: str
    msg_id: str
    subject: str | None = Field(
        description="What the event is about ('alert:12'); one subject's events go out in order."
    )
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_response_excerpt: str | None
    last_error: str | None
    last_duration_ms: float | None
    delivered_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]
