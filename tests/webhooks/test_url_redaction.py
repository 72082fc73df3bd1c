"""Webhook endpoint URLs are shown whole to admin keys only: an incoming-webhook URL (Slack,
PagerDuty, ...) embeds its secret token, and read and write keys see scheme and host only,
in the API and on the pages, through the one shape of the noun (WebhookOut)."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.redaction import redacted_url
from app.models import AuditLog
from app.models.project import Role
from tests.conftest import new_key
from tests.web.test_pages import sign_in

Headers = dict[str, str]
TOKEN = "XXXXtokenXXXX"
URL = f"http://127.0.0.1:9/services/T0000/B0000/{TOKEN}?routing_key=R{TOKEN}"
REDACTED = "http://127.0.0.1/[redacted]"


def bearer(key: str) -> Headers:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def webhook_id(client: TestClient, auth: Headers) -> int:
    created = client.post(
        "/api/v1/webhooks", json={"url": URL, "events": ["alert.opened"]}, headers=auth
    )
    assert created.status_code == 201, created.text
    assert created.json()["url"] == URL  # the admin who set it sees it whole
    webhook: int = created.json()["id"]
    return webhook


@pytest.mark.parametrize("role", [Role.read, Role.write])
def test_keys_below_admin_see_the_url_redacted_in_the_api(
    app: FastAPI, client: TestClient, webhook_id: int, role: Role
) -> None:
    """Before, a read key's GET /webhooks answered the whole URL, token and routing key
    included. Now scheme and host, then a fixed mask."""
    headers = bearer(new_key(app, "acme", role, f"acme-{role}"))
    listed = client.get("/api/v1/webhooks", headers=headers)
    one = client.get(f"/api/v1/webhooks/{webhook_id}", headers=headers)
    assert listed.status_code == 200 and one.status_code == 200
    assert [item["url"] for item in listed.json()["items"]] == [REDACTED]
    assert one.json()["url"] == REDACTED
    assert TOKEN not in listed.text and TOKEN not in one.text


def test_admin_keys_see_the_url_whole(client: TestClient, auth: Headers, webhook_id: int) -> None:
    assert client.get(f"/api/v1/webhooks/{webhook_id}", headers=auth).json()["url"] == URL
    assert [i["url"] for i in client.get("/api/v1/webhooks", headers=auth).json()["items"]] == [URL]
    patched = client.patch(
        f"/api/v1/webhooks/{webhook_id}", json={"description": "pager"}, headers=auth
    )
    assert patched.json()["url"] == URL
    rotated = client.post(f"/api/v1/webhooks/{webhook_id}/rotate-secret", headers=auth)
    assert rotated.json()["url"] == URL


def test_the_webhooks_page_redacts_the_url_for_a_read_key(
    app: FastAPI, client: TestClient, admin_key: str, webhook_id: int
) -> None:
    sign_in(client, new_key(app, "acme", Role.read, "acme-reader"))
    page = client.get("/webhooks")
    assert page.status_code == 200
    assert TOKEN not in page.text and REDACTED in page.text

    sign_in(client, admin_key)
    page = client.get("/webhooks")
    assert page.status_code == 200
    assert URL.replace("&", "&amp;") in page.text or URL in page.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T1/B2/secret", "https://hooks.slack.com/[redacted]"),
        (
            "https://u:p@Events.PagerDuty.com:8443/v2?k=s#f",
            "https://events.pagerduty.com/[redacted]",
        ),
        ("http://[::1]:8080/hook/secret", "http://[::1]/[redacted]"),
        ("not a url", "[redacted]"),
        ("http://[::1/unclosed", "[redacted]"),
    ],
)
def test_a_redacted_url_keeps_scheme_and_host_only(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_the_audit_log_records_the_url_redacted(
    client: TestClient, auth: Headers, db: Session, webhook_id: int
) -> None:
    """Before, `webhook.created`, `webhook.updated` (a new url) and `webhook.deleted` kept the
    whole URL, token included, in the audit log for good. Now its scheme and host only; the
    endpoint id (target_id) tells endpoints apart, and no audit row holds a secret."""
    other = f"http://localhost:9/services/T1/B2/{TOKEN}"
    patched = client.patch(f"/api/v1/webhooks/{webhook_id}", json={"url": other}, headers=auth)
    assert patched.status_code == 200, patched.text
    rotated = client.post(f"/api/v1/webhooks/{webhook_id}/rotate-secret", headers=auth)
    assert rotated.status_code == 200, rotated.text
    assert client.delete(f"/api/v1/webhooks/{webhook_id}", headers=auth).status_code == 204
    rows = db.scalars(
        select(AuditLog).where(AuditLog.target_type == "webhook").order_by(AuditLog.id)
    ).all()
    assert [(row.action, row.target_id, row.details.get("url")) for row in rows] == [
        ("webhook.created", str(webhook_id), REDACTED),
        ("webhook.updated", str(webhook_id), "http://localhost/[redacted]"),
        ("webhook.secret_rotated", str(webhook_id), None),
        ("webhook.deleted", str(webhook_id), "http://localhost/[redacted]"),
    ]
    stored = json.dumps([row.details for row in rows])
    assert TOKEN not in stored and rotated.json()["secret"][6:] not in stored
