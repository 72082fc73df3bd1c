"""Project A's canary (decided by hand, so every route has a row to find), for
tests/test_authorization.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

# After the registry and the gates (which seed nothing a canary needs) and before drift.
ORDER = 45


def seed(client: TestClient, auth: dict[str, str], ids: dict[str, Any]) -> None:
    created = client.post(
        f"/api/v1/models/{ids['model']}/canaries",
        json={
            "checkpoint_id": ids["checkpoint_id"],
            "cohorts": [{"dimension": "region", "value": "alpha-secret-region"}],
        },
        headers=auth,
    )
    assert created.status_code == 201, created.text
    ids["canary_id"] = created.json()["id"]


BODIES: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("POST", "/api/v1/models/{model}/canaries"): lambda ids: {
        "checkpoint_id": ids["checkpoint_id"]
    },
    ("POST", "/api/v1/canaries/{canary_id}/stop"): lambda ids: {"reason": "takeover"},
    ("POST", "/api/v1/canaries/{canary_id}/rollback"): lambda ids: {"reason": "takeover"},
}
