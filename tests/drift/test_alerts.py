"""Alert lifecycle, monitors and incident days over the API; the scheduler's once-per-period
claim."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import today_utc
from app.core.links import Links
from app.drift.job import DRIFT_JOB, run_scheduled_drift
from app.models import JobRun, WebhookDelivery
from app.schedule import start_scheduler
from tests.drift.traffic import Segment, day_of_traffic, post_events

Headers = dict[str, str]
STEADY = (Segment("free", 400, ("/chat",), ("us",), 0.05),)


def setup_model(client: TestClient, auth: Headers) -> None:
    v1 = client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    client.post(
        "/api/v1/models/m/promote",
        json={"checkpoint_id": v1.json()["id"], "reason": "first"},
        headers=auth,
    ).raise_for_status()


def traffic(days_ago: int, refusal: float, seed: int) -> list[dict[str, Any]]:
    day = today_utc() - timedelta(days=days_ago)
    return list(day_of_traffic(random.Random(seed), day, "m", "v1", STEADY, {"free": refusal}))


def run(client: TestClient, auth: Headers, days_ago: int) -> dict[str, Any]:
    day = (today_utc() - timedelta(days=days_ago)).isoformat()
    response = client.post("/api/v1/drift/run", json={"date": day}, headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


def refusal_alerts(client: TestClient, auth: Headers) -> list[dict[str, Any]]:
    params = {"signal": "refusal_rate", "dimension": "all"}
    return list(client.get("/api/v1/alerts", params=params, headers=auth).json()["items"])


def test_alert_opens_skips_a_day_without_data_and_resolves_after_two_days_in_band(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    setup_model(client, auth)
    hook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["alert.opened", "alert.resolved"]},
        headers=auth,
    )
    assert hook.status_code == 201
    events = [e for ago in range(12, 6, -1) for e in traffic(ago, 0.05, ago)]
    events += traffic(6, 0.30, 6) + traffic(4, 0.05, 4) + traffic(3, 0.05, 3)
    post_events(client, auth, events)
    for ago in range(12, 6, -1):
        assert run(client, auth, ago)["alerts_opened"] == 0
    assert run(client, auth, 6)["alerts_opened"] >= 1
    [alert] = refusal_alerts(client, auth)
    assert alert["status"] == "open" and alert["volume"] == 400
    assert alert["band"]["low"] <= alert["baseline"] <= alert["band"]["high"] < alert["observed"]

    run(client, auth, 5)  # no traffic at all that day
    [alert] = refusal_alerts(client, auth)
    assert alert["status"] == "open" and alert["days_in_band"] == 0
    assert {"kind": "no_data", "day": alert["last_day"]} not in alert["annotations"]
    assert any(a["kind"] == "no_data" for a in alert["annotations"])

    run(client, auth, 4)
    run(client, auth, 4)  # a rerun does not count the same day twice
    assert refusal_alerts(client, auth)[0]["days_in_band"] == 1
    run(client, auth, 3)
    [alert] = refusal_alerts(client, auth)
    assert alert["status"] == "resolved" and alert["resolution"] == "recovered"
    run(client, auth, 6)  # the day that opened it, again: judged already, no new alert
    assert len(refusal_alerts(client, auth)) == 1
    with app.state.sessionmaker() as session:
        msg_ids = set(session.scalars(select(WebhookDelivery.msg_id)).all())
    assert {f"alert.opened.{alert['id']}", f"alert.resolved.{alert['id']}"} <= msg_ids


def test_fixed_band_override_ack_and_resolve(client: TestClient, auth: Headers) -> None:
    setup_model(client, auth)
    post_events(client, auth, traffic(1, 0.05, 1))
    defaults = client.get("/api/v1/monitors", params={"model": "m"}, headers=auth).json()
    assert {m["signal"] for m in defaults["items"]} == {
        "eval_fail_rate",
        "fallback_rate",
        "refusal_rate",
        "thumbs_down_rate",
    }
    assert all(m["is_default"] and m["band"]["type"] == "baseline" for m in defaults["items"])
    override = {
        "model": "m",
        "signal": "eval_fail_rate",
        "dimension": "route",
        "value": "/chat",
        "band": {"type": "fixed", "high": 0.01},
        "min_volume": 50,
    }
    created = client.post("/api/v1/monitors", json=override, headers=auth)
    assert created.status_code == 201, created.text
    assert client.post("/api/v1/monitors", json=override, headers=auth).status_code == 409
    replaced = client.put("/api/v1/monitors", json={**override, "cooldown_hours": 1}, headers=auth)
    assert replaced.status_code == 200 and replaced.json()["id"] == created.json()["id"]

    assert run(client, auth, 1)["alerts_opened"] == 1
    [alert] = client.get("/api/v1/alerts", params={"status": "open"}, headers=auth).json()["items"]
    assert (alert["dimension"], alert["value"], alert["band"]["high"]) == ("route", "/chat", 0.01)
    assert alert["rollback_target"] is None  # one champion so far: nothing to roll back to
    acked = client.post(f"/api/v1/alerts/{alert['id']}/ack", json={"note": "looking"}, headers=auth)
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    assert client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=auth).status_code == 409
    resolved = client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=auth)
    assert resolved.status_code == 200 and resolved.json()["resolution"] == "manual"
    assert client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=auth).status_code == 409
    assert client.get("/api/v1/alerts/999999", headers=auth).status_code == 404


def test_monitor_and_incident_day_validation(client: TestClient, auth: Headers) -> None:
    setup_model(client, auth)
    bad_band = {"model": "m", "signal": "brier_score", "band": {"type": "baseline"}}
    response = client.post("/api/v1/monitors", json=bad_band, headers=auth)
    assert response.status_code == 422 and "band" in response.json()["detail"]
    unknown = {"model": "m", "signal": "vibes", "band": {"type": "fixed", "high": 1}}
    assert "signal" in client.post("/api/v1/monitors", json=unknown, headers=auth).json()["detail"]
    empty_band = {"model": "m", "signal": "ece", "band": {"type": "fixed"}}
    assert client.post("/api/v1/monitors", json=empty_band, headers=auth).status_code == 422
    nobody = {"model": "nope", "signal": "ece", "band": {"type": "fixed", "high": 0.1}}
    assert client.post("/api/v1/monitors", json=nobody, headers=auth).status_code == 404
    day = today_utc().isoformat()
    marked = client.post(
        "/api/v1/incident-days", json={"model": "m", "day": day, "note": "outage"}, headers=auth
    )
    assert marked.status_code == 201
    listed = client.get("/api/v1/incident-days", params={"model": "m"}, headers=auth).json()
    assert [(d["day"], d["note"]) for d in listed["items"]] == [(day, "outage")]


def test_the_scheduled_job_runs_once_per_period(app: FastAPI) -> None:
    sessions = app.state.sessionmaker
    now = datetime(2030, 5, 2, 0, 15, tzinfo=UTC)
    assert run_scheduled_drift(sessions, Links.of(app.state.settings), now) == []
    assert (
        run_scheduled_drift(sessions, Links.of(app.state.settings), now) is None
    )  # another process already claimed it
    with sessions() as session:
        [claim] = session.scalars(select(JobRun).where(JobRun.job == DRIFT_JOB)).all()
    assert (claim.period, claim.status) == ("2030-05-01", "succeeded")
    scheduler = start_scheduler(sessions, app.state.settings)
    try:
        job = scheduler.get_job(DRIFT_JOB)
        assert job is not None and str(job.trigger).startswith("cron")
    finally:
        scheduler.shutdown(wait=False)
