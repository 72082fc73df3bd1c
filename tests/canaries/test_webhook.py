"""`canary.decided` reaches a real receiver, signed (Standard Webhooks), with the evidence and
the rollback confirmation link; a second look never sends it twice, and confirming the
rollback sends nothing new."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from app.core.settings import Settings
from app.webhooks.sender import deliver_webhooks
from tests.canaries.support import (
    candidate_and_champion,
    every,
    hours_ago,
    send,
    served,
    start_canary,
)
from tests.webhooks.receiver import receiver

Headers = dict[str, str]
HOUR = timedelta(hours=1)


def drain(app: FastAPI, settings: Settings) -> None:
    while deliver_webhooks(app.state.sessionmaker, settings):
        pass


def test_a_rollback_decision_is_delivered_signed_with_its_evidence(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    ids = candidate_and_champion(client, auth)
    with receiver() as hook:
        created = client.post(
            "/api/v1/webhooks", json={"url": hook.url, "events": ["canary.decided"]}, headers=auth
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        canary = start_canary(client, auth, ids["v2"], start=hours_ago(2).isoformat())
        send(
            client,
            auth,
            served("v1", 900, every(20, refusal=True), hours_ago(1.5), HOUR),
            served("v2", 100, every(3, refusal=True), hours_ago(1.5), HOUR),
        )
        for _ in range(3):  # however often it is looked at, one decision, one message
            client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth)
        drain(app, settings)
        [(headers, body)] = hook.requests
        payload = Webhook(secret).verify(body, headers)
        assert headers["webhook-id"] == f"canary.{canary['id']}.decided.rollback"
        assert payload["type"] == "canary.decided"
        data = payload["data"]
        assert (data["id"], data["model"], data["checkpoint_version"]) == (
            canary["id"],
            "support-bot",
            "v2",
        )
        assert (data["status"], data["decision"]) == ("rollback", "rollback")
        worse = [c for c in data["evidence"]["comparisons"] if c["verdict"] == "worse"]
        assert [(c["comparison"], c["signal"]) for c in worse] == [("served", "refusal_rate")]
        assert worse[0]["candidate"] == {"events": 100, "with_signal": 34, "rate": 0.34}
        assert data["rollback"] == {
            "checkpoint_id": ids["v2"],
            "version": "v2",
            "url": f"http://plumbline.test/canaries/{canary['id']}/rollback",
        }
        assert data["links"]["canary"] == f"http://plumbline.test/canaries/{canary['id']}"

        confirmed = client.post(
            f"/api/v1/canaries/{canary['id']}/rollback",
            json={"reason": "confirmed by on-call"},
            headers=auth,
        )
        assert confirmed.status_code == 200 and confirmed.json()["rolled_back_at"] is not None
        drain(app, settings)
        assert len(hook.requests) == 1
