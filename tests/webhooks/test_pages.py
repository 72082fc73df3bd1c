"""Webhook deliveries on the pages: the delivery log and its filters, an alert's notifications."""

from __future__ import annotations

import random
from datetime import timedelta

from fastapi.testclient import TestClient

from app.core.db import today_utc
from tests.drift.traffic import Segment, day_of_traffic, post_events, run_drift
from tests.web.test_pages import sign_in


def test_an_unknown_delivery_status_filter_is_an_html_422_naming_it(
    client: TestClient, admin_key: str
) -> None:
    sign_in(client, admin_key)
    auth = {"Authorization": f"Bearer {admin_key}"}
    webhook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["alert.opened"]},
        headers=auth,
    ).json()
    queued = client.post(f"/api/v1/webhooks/{webhook['id']}/test", headers=auth).json()

    pending = client.get("/webhooks?status=pending")
    assert pending.status_code == 200 and queued["msg_id"] in pending.text
    every = client.get("/webhooks?status=")
    assert every.status_code == 200 and queued["msg_id"] in every.text
    dead = client.get("/webhooks?status=dead")
    assert dead.status_code == 200 and queued["msg_id"] not in dead.text
    unknown = client.get("/webhooks?status=lost")
    assert unknown.status_code == 422
    assert unknown.headers["content-type"].startswith("text/html")
    assert "status" in unknown.text


def test_an_alert_page_lists_the_reminders_sent_for_it(client: TestClient, admin_key: str) -> None:
    """An alert still open on a later day is re-notified (`alert.opened.<id>.reminder.<day>`):
    its page's notifications must show those deliveries too, not only the first one."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    v1 = client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    client.post(
        "/api/v1/models/m/promote",
        json={"checkpoint_id": v1.json()["id"], "reason": "first"},
        headers=auth,
    ).raise_for_status()
    webhook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["alert.opened"]},
        headers=auth,
    ).json()
    monitor = {
        "model": "m",
        "signal": "eval_fail_rate",
        "dimension": "route",
        "value": "/chat",
        "band": {"type": "fixed", "high": 0.01},
        "min_volume": 50,
        "cooldown_hours": 0,
    }
    assert client.post("/api/v1/monitors", json=monitor, headers=auth).status_code == 201
    yesterday = today_utc() - timedelta(days=1)
    days = (yesterday - timedelta(days=1), yesterday)
    for index, day in enumerate(days):
        segment = (Segment("free", 300, ("/chat",), ("us",), 0.05),)
        post_events(
            client, auth, list(day_of_traffic(random.Random(index), day, "m", "v1", segment))
        )
    for day in days:
        run_drift(client, auth, day)
    [alert] = client.get("/api/v1/alerts", params={"status": "open"}, headers=auth).json()["items"]
    log = client.get(f"/api/v1/webhooks/{webhook['id']}/deliveries", headers=auth).json()["items"]
    msg_ids = {delivery["msg_id"] for delivery in log}
    reminder = f"alert.opened.{alert['id']}.reminder.{yesterday.isoformat()}"
    assert msg_ids == {f"alert.opened.{alert['id']}", reminder}

    sign_in(client, admin_key)
    page = client.get(f"/alerts/{alert['id']}")
    assert page.status_code == 200
    assert page.text.count("alert.opened → endpoint") == 2
