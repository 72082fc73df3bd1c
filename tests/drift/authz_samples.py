"""Project A's drift data (signals, monitors, an alert, an incident day; its day is the
`day` path value) for the generic authorization test."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.core.db import today_utc
from tests.drift.traffic import at

ORDER = 50


def seed(client: TestClient, auth: dict[str, str], ids: dict[str, Any]) -> None:
    day = today_utc() - timedelta(days=1)
    events = [
        {
            "trace_id": f"alpha-secret-trace-{i}",
            "timestamp": at(day, i),
            "model": ids["model"],
            "checkpoint_version": "alpha-v1",
            "cohort": {"user_segment": "alpha-secret-segment"},
            "fallback": True,
        }
        for i in range(5)
    ]
    client.post("/api/v1/events", json={"events": events}, headers=auth).raise_for_status()
    monitor = {
        "model": ids["model"],
        "signal": "fallback_rate",
        "band": {"type": "fixed", "high": 0.5},
        "min_volume": 1,
    }
    client.put("/api/v1/monitors", json=monitor, headers=auth).raise_for_status()
    client.post(
        "/api/v1/drift/run", json={"date": day.isoformat()}, headers=auth
    ).raise_for_status()
    alerts = client.get("/api/v1/alerts", headers=auth).json()["items"]
    ids["alert_id"] = alerts[0]["id"]
    client.post(
        "/api/v1/incident-days",
        json={"model": ids["model"], "day": day.isoformat(), "note": "alpha-secret outage"},
        headers=auth,
    ).raise_for_status()
    ids["day"] = day.isoformat()


BODIES: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("POST", "/api/v1/drift/run"): lambda ids: {},
    ("POST", "/api/v1/monitors"): lambda ids: {
        "model": ids["model"],
        "signal": "refusal_rate",
        "band": {"type": "fixed", "high": 0.1},
    },
    ("PUT", "/api/v1/monitors"): lambda ids: {
        "model": ids["model"],
        "signal": "fallback_rate",
        "band": {"type": "fixed", "high": 0.9},
        "min_volume": 1,
    },
    ("POST", "/api/v1/incident-days"): lambda ids: {"model": ids["model"], "day": "2024-01-01"},
    ("POST", "/api/v1/alerts/{alert_id}/ack"): lambda ids: {},
    ("POST", "/api/v1/alerts/{alert_id}/resolve"): lambda ids: {},
    ("POST", "/api/v1/models/{model}/rebaseline"): lambda ids: {"reason": "takeover"},
    ("PUT", "/api/v1/drift/settings"): lambda ids: {"reference_days": 56},
}
