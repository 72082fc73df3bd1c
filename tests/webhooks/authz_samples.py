"""Project A's webhook endpoint and one delivery, for the generic authorization test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

# A public IP literal: accepted without allow_private and never contacted (no worker runs).
ORDER = 60


def seed(client: TestClient, auth: dict[str, str], ids: dict[str, Any]) -> None:
    created = client.post(
        "/api/v1/webhooks",
        json={
            "url": "https://93.184.215.14/alpha-secret-hook",
            "events": ["alert.opened"],
            "description": "alpha-secret endpoint",
        },
        headers=auth,
    )
    assert created.status_code == 201, created.text
    ids["webhook_id"] = created.json()["id"]
    delivery = client.post(f"/api/v1/webhooks/{ids['webhook_id']}/test", headers=auth)
    ids["delivery_id"] = delivery.json()["id"]


BODIES: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("POST", "/api/v1/webhooks"): lambda ids: {
        "url": "https://93.184.215.14/b",
        "events": ["alert.opened"],
    },
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): lambda ids: {"description": "takeover"},
}
