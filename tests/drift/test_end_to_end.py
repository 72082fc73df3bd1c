"""Issue 6, point 6 (issue 13's frozen reference): forty-five days of traffic, a new
champion on day 38 that quadruples one user segment's refusal rate. The daily job must open
exactly the expected alerts, a real receiver must get a verifiable webhook (with the
evidence) naming the previous champion as the rollback target, a receiver failing twice must
get it on the third attempt, and rerunning a day must not open a duplicate."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from standardwebhooks import Webhook

from app.core.db import today_utc, utcnow
from app.core.settings import Settings
from app.models import WebhookDelivery
from app.webhooks.sender import deliver_webhooks
from tests.drift.traffic import Segment, day_of_traffic, post_events, run_drift
from tests.webhooks.receiver import Receiver, receiver

Headers = dict[str, str]
MODEL = "support-bot"
SEGMENTS = (
    Segment("free", 1500, ("/chat", "/search"), ("us", "eu"), 0.05),
    Segment("enterprise", 400, ("/chat",), ("eu",), 0.05),
    # Twelve requests a day whose refusal rate swings wildly: noise nobody should be paged for.
    Segment("beta", 12, ("/search",), ("us",), 0.05),
)
DAYS = 45
CHANGE_DAY = 38  # v1's reference (7 warm-up days, then 28) is frozen by then
# The enterprise segment lives on /chat in the EU, so exactly these cohorts move, in refusal
# and in over-refusal (refusals of requests that should be answered, i.e. nearly all).
EXPECTED = {
    (signal, dimension, value)
    for signal in ("refusal_rate", "over_refusal_rate")
    for dimension, value in (
        ("all", "all"),
        ("user_segment", "enterprise"),
        ("route", "/chat"),
        ("prompt_version", "p3"),
        ("region", "eu"),
    )
}


def seed_days(client: TestClient, auth: Headers) -> tuple[list[Any], dict[str, int]]:
    ids = {}
    for version in ("v1", "v2"):
        created = client.post(
            "/api/v1/checkpoints", json={"model": MODEL, "version": version}, headers=auth
        )
        ids[version] = created.json()["id"]
    client.post(
        f"/api/v1/models/{MODEL}/promote",
        json={"checkpoint_id": ids["v1"], "reason": "first champion"},
        headers=auth,
    ).raise_for_status()
    client.post(
        f"/api/v1/models/{MODEL}/promote",
        json={"checkpoint_id": ids["v2"], "force": True, "reason": "weekly fine-tune"},
        headers=auth,
    ).raise_for_status()
    rng = random.Random(20240601)
    first = today_utc() - timedelta(days=DAYS)
    days = [first + timedelta(days=n) for n in range(DAYS)]
    events: list[dict[str, Any]] = []
    for number, day in enumerate(days, start=1):
        changed = number >= CHANGE_DAY
        override = {"beta": rng.choice([0.0, 0.5, 0.9])}
        if changed:
            override["enterprise"] = 0.20
        events += day_of_traffic(
            rng, day, MODEL, "v2" if changed else "v1", SEGMENTS, override, wobble=0.1
        )
    post_events(client, auth, events)
    return days, ids


def drain(app: FastAPI, settings: Settings) -> None:
    while deliver_webhooks(app.state.sessionmaker, settings):
        pass


def make_due_now(app: FastAPI) -> None:
    """Backoff is real (seconds to minutes); the test moves retries to now instead of waiting."""
    with app.state.sessionmaker() as session:
        session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))
        session.commit()


def subscribe(client: TestClient, auth: Headers, hook: Receiver) -> str:
    created = client.post(
        "/api/v1/webhooks",
        json={"url": hook.url, "events": ["alert.opened", "alert.resolved", "champion.changed"]},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    secret: str = created.json()["secret"]
    assert secret.startswith("whsec_")
    return secret


def test_a_champion_change_opens_the_expected_alerts_and_webhooks_arrive_signed(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    days, ids = seed_days(client, auth)
    with receiver() as good, receiver(fail_first=2) as flaky:
        good_secret = subscribe(client, auth, good)
        flaky_secret = subscribe(client, auth, flaky)

        run = run_drift(client, auth, days[-1], DAYS)
        alerts = client.get("/api/v1/alerts", params={"limit": 100}, headers=auth).json()["items"]
        opened = {(a["signal"], a["dimension"], a["value"]) for a in alerts}
        assert opened == EXPECTED
        assert run["alerts_opened"] == len(EXPECTED)
        for alert in alerts:
            assert alert["status"] == "open"
            assert alert["day"] >= days[CHANGE_DAY - 1].isoformat()  # none before the change
            assert alert["checkpoint_version"] == "v2"
            # Open on the band (today's rate above it) or on the CUSUM (a run of high days).
            evidence = alert["evidence"]
            assert alert["band"]["high"] > alert["baseline"] == evidence["reference"]["center"]
            assert alert["observed"] > alert["band"]["high"] or "cusum" in evidence["rules"]
            assert evidence["reference"]["checkpoint_version"] == "v1"
            assert alert["rollback_target"] == {"checkpoint_id": ids["v1"], "version": "v1"}
            assert alert["sample_trace_ids"]
        segment_alert = next(
            a for a in alerts if a["value"] == "enterprise" and a["signal"] == "refusal_rate"
        )
        assert 0.07 < segment_alert["baseline"] < 0.12  # 5% of answers + nearly all risky
        assert segment_alert["day"] == days[CHANGE_DAY - 1].isoformat()
        assert all("enterprise" in t for t in segment_alert["sample_trace_ids"])

        drain(app, settings)
        msg_id = f"alert.opened.{segment_alert['id']}"
        [(headers, body)] = [(h, b) for h, b in good.requests if h["webhook-id"] == msg_id]
        payload = Webhook(good_secret).verify(body, headers)
        assert payload["type"] == "alert.opened"
        data = payload["data"]
        assert data["model"] == MODEL and data["signal"] == "refusal_rate"
        # Every field the payload carried before, plus the evidence of the day it opened.
        assert {
            "id",
            "status",
            "model",
            "checkpoint_id",
            "checkpoint_version",
            "signal",
            "dimension",
            "value",
            "cohort",
            "day",
            "last_day",
            "observed",
            "band",
            "baseline",
            "volume",
            "sample_trace_ids",
            "rollback_target",
            "monitor_id",
            "days_in_band",
            "annotations",
            "links",
            "rollback",
            "evidence",
        } <= set(data)
        opened_evidence = data["evidence"]
        assert opened_evidence["day"] == segment_alert["day"] and opened_evidence["rules"]
        assert opened_evidence["reference"]["checkpoint_version"] == "v1"
        assert opened_evidence["reference"]["days"] == 28
        assert opened_evidence["band"]["high"] == data["band"]["high"] < data["observed"]
        assert opened_evidence["cusum"]["threshold"] > opened_evidence["cusum"]["release"] > 0
        assert data["cohort"] == {"dimension": "user_segment", "value": "enterprise"}
        assert data["rollback"]["target"] == {"checkpoint_id": ids["v1"], "version": "v1"}
        assert data["rollback"]["url"] == (
            f"http://plumbline.test/models/{MODEL}/rollback?alert_id={segment_alert['id']}"
        )
        assert data["links"]["alert"] == f"http://plumbline.test/alerts/{segment_alert['id']}"
        trace = data["sample_trace_ids"][0]
        assert {"trace_id": trace, "url": f"http://plumbline.test/traces/{trace}"} in data["links"][
            "traces"
        ]
        assert len(good.requests) == len(EXPECTED)

        # The flaky receiver refuses each message twice; each retry is signed afresh and the
        # third lands. A retry's delay is jittered from 0 s, so on a slow machine one may come
        # due during a drain already: retries are moved to now until every message landed.
        for _ in range(3):
            if len(flaky.requests) == len(EXPECTED):
                break
            make_due_now(app)
            drain(app, settings)
        assert len(flaky.requests) == len(EXPECTED)
        assert set(flaky.attempts_by_msg.values()) == {3}
        [(flaky_headers, flaky_body)] = [
            (h, b) for h, b in flaky.requests if b"enterprise" in b and h["webhook-id"] == msg_id
        ]
        assert Webhook(flaky_secret).verify(flaky_body, flaky_headers)["data"] == data
        log = client.get(
            f"/api/v1/webhooks/{_webhook_id(client, auth, flaky.url)}/deliveries", headers=auth
        ).json()["items"]
        assert {d["status"] for d in log} == {"succeeded"}
        assert {d["attempts"] for d in log} == {3}

        # Rerunning a day inside the incident opens nothing new and sends nothing new.
        rerun = client.post(
            "/api/v1/drift/run", json={"date": days[CHANGE_DAY + 2].isoformat()}, headers=auth
        ).json()
        assert rerun["alerts_opened"] == 0
        again = client.get("/api/v1/alerts", params={"limit": 100}, headers=auth).json()["items"]
        assert sorted(a["id"] for a in again) == sorted(a["id"] for a in alerts)
        drain(app, settings)
        assert len(good.requests) == len(EXPECTED)

        # Rollback from the alert: v1 is champion again, the alert says so, receivers hear it.
        rolled = client.post(
            f"/api/v1/models/{MODEL}/rollback",
            json={"reason": "refusals quadrupled for enterprise", "alert_id": segment_alert["id"]},
            headers=auth,
        )
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["champion"]["version"] == "v1"
        assert rolled.json()["history"][0]["alert_id"] == segment_alert["id"]
        annotated = client.get(f"/api/v1/alerts/{segment_alert['id']}", headers=auth).json()
        assert annotated["annotations"][-1]["kind"] == "rollback"
        assert annotated["annotations"][-1]["version"] == "v1"
        drain(app, settings)
        changed = [
            json.loads(b) for h, b in good.requests if h["webhook-id"].startswith("champion")
        ]
        assert [c["data"]["version"] for c in changed] == ["v1"]
        assert changed[0]["data"]["alert_id"] == segment_alert["id"]


def _webhook_id(client: TestClient, auth: Headers, url: str) -> int:
    hooks = client.get("/api/v1/webhooks", headers=auth).json()["items"]
    return int(next(h["id"] for h in hooks if h["url"] == url))
