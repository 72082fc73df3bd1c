"""Alert lifecycle through the daily job: a frozen reference, a persistent shift that keeps
its alert open with evidence until it ends, recovery, reruns; monitors, incident days,
rebaseline and their validation over the API; the scheduler's once-per-period claim."""

from __future__ import annotations

import random
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import today_utc
from app.core.links import Links
from app.drift.job import DRIFT_JOB, run_scheduled_drift
from app.drift.schemas import DEFAULT_REFERENCE_DAYS, DEFAULT_WARMUP_DAYS
from app.drift.signals import ALL_SIGNALS
from app.models import AuditLog, JobRun, WebhookDelivery
from app.schedule import start_scheduler
from tests.drift.traffic import Segment, Shift, day_of_traffic, post_events, run_drift

Headers = dict[str, str]
STEADY = (Segment("free", 300, ("/chat",), ("us",), 0.05),)
# The reference freezes before the last one.
STEADY_DAYS = DEFAULT_WARMUP_DAYS + DEFAULT_REFERENCE_DAYS + 1
SHIFT_DAYS, RECOVERY_DAYS = 8, 14
TOTAL = STEADY_DAYS + SHIFT_DAYS + RECOVERY_DAYS


def setup_model(client: TestClient, auth: Headers) -> None:
    v1 = client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    client.post(
        "/api/v1/models/m/promote",
        json={"checkpoint_id": v1.json()["id"], "reason": "first"},
        headers=auth,
    ).raise_for_status()


def day_at(index: int) -> date:
    """Day `index` of the story (0 = first), the last story day being yesterday."""
    return today_utc() - timedelta(days=TOTAL - index)


def traffic(index: int, refusal: float, seed: int, shifts: tuple[Shift, ...] = ()) -> list[Any]:
    day = day_at(index)
    return list(
        day_of_traffic(
            random.Random(seed),
            day,
            "m",
            "v1",
            STEADY,
            {"free": refusal},
            wobble=0.1,
            shifts=shifts,
            seed=seed,
        )
    )


def run(client: TestClient, auth: Headers, index: int, backfill: int = 1) -> dict[str, Any]:
    return dict(run_drift(client, auth, day_at(index), backfill))


def refusal_alerts(client: TestClient, auth: Headers) -> list[dict[str, Any]]:
    params = {"signal": "refusal_rate", "dimension": "all"}
    return list(client.get("/api/v1/alerts", params=params, headers=auth).json()["items"])


def test_a_persistent_shift_stays_alerted_with_evidence_and_resolves_after_recovery(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    setup_model(client, auth)
    hook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["alert.opened", "alert.resolved"]},
        headers=auth,
    )
    assert hook.status_code == 201
    shift_start = STEADY_DAYS
    no_data = shift_start + 4
    shift = Shift("free", "refusal", day_at(shift_start), 3.0, end=day_at(shift_start + SHIFT_DAYS))
    events = [
        e for index in range(TOTAL) if index != no_data for e in traffic(index, 0.05, 7, (shift,))
    ]
    post_events(client, auth, events)

    steady = run(client, auth, STEADY_DAYS - 1, backfill=STEADY_DAYS)
    assert steady["alerts_opened"] == 0
    [reference] = client.get("/api/v1/models/m/references", headers=auth).json()["items"]
    assert (reference["version"], reference["status"], reference["trigger"]) == (
        1,
        "active",
        "warmup",
    )
    assert reference["first_day"] == day_at(DEFAULT_WARMUP_DAYS).isoformat()
    assert len(reference["days"]) == DEFAULT_REFERENCE_DAYS and reference["cohorts"] > 0

    opened_on = None
    for index in range(shift_start, shift_start + SHIFT_DAYS):
        run(client, auth, index)
        alerts = refusal_alerts(client, auth)
        if alerts and opened_on is None:
            opened_on = index
        if opened_on is not None:  # once open, open for as long as the shift lasts
            [alert] = alerts
            assert alert["status"] == "open", (index, alert)
    assert opened_on is not None and opened_on <= shift_start + 2
    [alert] = refusal_alerts(client, auth)
    evidence = alert["evidence"]
    assert set(evidence["rules"]) <= {"band", "cusum"} and evidence["rules"]
    assert evidence["cusum"]["threshold"] > 0 and evidence["cusum"]["statistic"] >= 0
    assert evidence["band"]["side"] == "upper" and 0 < evidence["band"]["alpha"] < 0.002
    assert evidence["reference"]["version"] == 1
    assert evidence["reference"]["first_day"] == reference["first_day"]
    assert evidence["reference"]["last_day"] == reference["last_day"]
    assert alert["baseline"] == evidence["reference"]["center"]
    assert any(
        a == {"kind": "no_data", "day": day_at(no_data).isoformat()} for a in alert["annotations"]
    )

    resolved_on = None
    for index in range(shift_start + SHIFT_DAYS, TOTAL):
        run(client, auth, index)
        run(client, auth, index)  # a rerun does not count the same day twice
        [alert] = refusal_alerts(client, auth)
        if alert["status"] == "resolved":
            resolved_on = index
            break
    # Resolved only after the shift ended, after at least three in-control days.
    assert resolved_on is not None and resolved_on >= shift_start + SHIFT_DAYS + 2
    assert alert["resolution"] == "recovered"
    run(client, auth, opened_on)  # the day that opened it, again: judged already, no new alert
    assert len(refusal_alerts(client, auth)) == 1
    with app.state.sessionmaker() as session:
        msg_ids = set(session.scalars(select(WebhookDelivery.msg_id)).all())
    assert {f"alert.opened.{alert['id']}", f"alert.resolved.{alert['id']}"} <= msg_ids
    # Alert days never enter a later reference: a rebaseline over the whole story skips them.
    if resolved_on < TOTAL - 1:
        run(client, auth, TOTAL - 1, backfill=TOTAL - 1 - resolved_on)
    rebased = client.post(
        "/api/v1/models/m/rebaseline",
        json={"reason": "new normal", "first_day": day_at(shift_start - 3).isoformat()},
        headers=auth,
    )
    assert rebased.status_code == 201, rebased.text
    taken = set(rebased.json()["days"])
    alert_days = {day_at(i).isoformat() for i in range(opened_on, resolved_on + 1)}
    assert taken and not taken & alert_days
    assert day_at(no_data).isoformat() not in taken


def test_fixed_band_override_ack_and_resolve(client: TestClient, auth: Headers) -> None:
    setup_model(client, auth)
    post_events(client, auth, traffic(TOTAL - 1, 0.05, 1))
    defaults = client.get("/api/v1/monitors", params={"model": "m"}, headers=auth).json()
    assert {m["signal"] for m in defaults["items"]} == set(ALL_SIGNALS)
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

    assert run(client, auth, TOTAL - 1)["alerts_opened"] == 1
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


def test_an_alert_whose_monitor_no_longer_judges_its_cohort_is_resolved(
    client: TestClient, auth: Headers
) -> None:
    """A more specific monitor takes the cohort over, or the monitor is disabled: nothing
    would judge the old alert again, so it would stay open for good (and keep every later day
    out of the known-good days). It resolves `monitor_changed` at the next run."""
    setup_model(client, auth)
    by_route = {"model": "m", "signal": "eval_fail_rate", "dimension": "route"}
    fixed = {"type": "fixed", "high": 0.01}
    assert client.put("/api/v1/monitors", json={**by_route, "band": fixed}, headers=auth).is_success
    post_events(client, auth, traffic(TOTAL - 2, 0.05, 1))
    assert run(client, auth, TOTAL - 2)["alerts_opened"] == 1
    [first] = client.get("/api/v1/alerts", params={"status": "open"}, headers=auth).json()["items"]
    narrower = {**by_route, "value": "/chat", "band": {"type": "fixed", "high": 0.02}}
    assert client.post("/api/v1/monitors", json=narrower, headers=auth).status_code == 201
    post_events(client, auth, traffic(TOTAL - 1, 0.05, 2))
    assert run(client, auth, TOTAL - 1)["alerts_opened"] == 1  # the narrower monitor's own
    old = client.get(f"/api/v1/alerts/{first['id']}", headers=auth).json()
    assert (old["status"], old["resolution"]) == ("resolved", "monitor_changed")
    [second] = client.get("/api/v1/alerts", params={"status": "open"}, headers=auth).json()["items"]
    assert second["band"]["high"] == 0.02
    disabled = {**narrower, "enabled": False}
    assert client.put("/api/v1/monitors", json=disabled, headers=auth).is_success
    run(client, auth, TOTAL - 1)
    gone = client.get(f"/api/v1/alerts/{second['id']}", headers=auth).json()
    assert (gone["status"], gone["resolution"]) == ("resolved", "monitor_changed")


def test_two_runs_of_one_day_at_once_both_succeed_and_open_one_alert(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The API's run beside the schedule's (or two clicks): the second waits for the first
    and redoes the day, instead of colliding on the day's rows (a 500 on PostgreSQL)."""
    setup_model(client, auth)
    monitor = {"model": "m", "signal": "refusal_rate", "band": {"type": "fixed", "high": 0.01}}
    assert client.put("/api/v1/monitors", json=monitor, headers=auth).is_success
    post_events(client, auth, traffic(TOTAL - 1, 0.05, 3))
    day = day_at(TOTAL - 1).isoformat()
    start = threading.Barrier(2)
    codes: list[int] = []

    def run_the_day() -> None:
        with TestClient(app) as own:
            start.wait()
            response = own.post("/api/v1/drift/run", json={"date": day}, headers=auth)
            codes.append(response.status_code)

    runs = [threading.Thread(target=run_the_day) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    assert codes == [200, 200]
    opened = client.get("/api/v1/alerts", params={"status": "open"}, headers=auth).json()
    keys = [(a["signal"], a["dimension"], a["value"]) for a in opened["items"]]
    assert ("refusal_rate", "all", "all") in keys and len(keys) == len(set(keys))


def test_monitor_and_incident_day_validation(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    setup_model(client, auth)
    bad_side = {"model": "m", "signal": "brier_score", "band": {"type": "baseline", "side": "x"}}
    response = client.post("/api/v1/monitors", json=bad_side, headers=auth)
    assert response.status_code == 422 and "side" in response.json()["detail"]
    assert response.headers["content-type"].startswith("application/problem+json")
    # The trailing-window band's settings are accepted and dropped (the reference is per model).
    legacy = {
        "model": "m",
        "signal": "latency_p95",
        "band": {"type": "baseline", "window_days": 14, "alpha": 0.001, "side": "two-sided"},
    }
    saved = client.put("/api/v1/monitors", json=legacy, headers=auth)  # replaces the default
    assert saved.status_code == 200 and saved.json()["band"] == {
        "type": "baseline",
        "side": "two-sided",
    }
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
    assert client.delete(f"/api/v1/models/m/incident-days/{day}", headers=auth).status_code == 204
    gone = client.delete(f"/api/v1/models/m/incident-days/{day}", headers=auth)
    assert gone.status_code == 404 and gone.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert client.get("/api/v1/incident-days", headers=auth).json()["items"] == []
    bad_day = client.delete("/api/v1/models/m/incident-days/yesterday", headers=auth)
    assert bad_day.status_code == 422
    with app.state.sessionmaker() as session:
        actions = set(session.scalars(select(AuditLog.action)).all())
    assert {"incident_day.marked", "incident_day.unmarked"} <= actions


def test_rebaseline_validates_its_input(app: FastAPI, client: TestClient, auth: Headers) -> None:
    setup_model(client, auth)
    url = "/api/v1/models/m/rebaseline"
    no_reason = client.post(url, json={}, headers=auth)
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    assert no_reason.headers["content-type"].startswith("application/problem+json")
    assert client.post(url, json={"reason": ""}, headers=auth).status_code == 422
    today = today_utc().isoformat()
    future = client.post(url, json={"reason": "r", "last_day": today}, headers=auth)
    assert future.status_code == 422 and "last_day" in future.json()["detail"]
    backwards = client.post(
        url,
        json={"reason": "r", "first_day": today, "last_day": day_at(TOTAL - 2).isoformat()},
        headers=auth,
    )
    assert backwards.status_code == 422 and "first_day" in backwards.json()["detail"]
    # Too few known-good days (none here): refused, nothing written, nothing audited.
    post_events(client, auth, traffic(TOTAL - 1, 0.05, 1))
    run(client, auth, TOTAL - 1)
    few = client.post(url, json={"reason": "r"}, headers=auth)
    assert few.status_code == 422 and "known-good" in few.json()["detail"]
    assert client.get("/api/v1/models/m/references", headers=auth).json()["items"] == []
    assert (
        client.post(
            "/api/v1/models/nope/rebaseline", json={"reason": "r"}, headers=auth
        ).status_code
        == 404
    )
    with app.state.sessionmaker() as session:
        assert "drift.rebaselined" not in set(session.scalars(select(AuditLog.action)).all())


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
