"""One endpoint's deliveries about one subject (an alert, a model's champion) reach the
receiver in the order their events were emitted, even when the first needs retries; other
subjects are not held up, and a given-up delivery lets the later ones of its subject go.

The receiver is test_delivery's real loopback server, verifying every signature."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.webhooks.delivery import MAX_ATTEMPTS, new_webhook_secret
from app.webhooks.sender import deliver_webhooks
from tests.drift.test_alerts import TOTAL, run, setup_model, traffic
from tests.drift.test_end_to_end import make_due_now
from tests.drift.traffic import post_events
from tests.webhooks.test_delivery import Receiver, Reply
from tests.webhooks.test_outbox import drain

Headers = dict[str, str]


def subscribe(client: TestClient, auth: Headers, hook: Receiver, secret: str, *events: str) -> str:
    created = client.post(
        "/api/v1/webhooks",
        json={"url": hook.url, "events": list(events), "secret": secret},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    return f"/api/v1/webhooks/{created.json()['id']}"


def promote(client: TestClient, auth: Headers, model: str, version: str) -> None:
    """A `champion.changed` event about `model`."""
    checkpoint = client.post(
        "/api/v1/checkpoints", json={"model": model, "version": version}, headers=auth
    )
    client.post(
        f"/api/v1/models/{model}/promote",
        json={"checkpoint_id": checkpoint.json()["id"], "force": True, "reason": "test"},
        headers=auth,
    ).raise_for_status()


def received(hook: Receiver) -> list[dict[str, Any]]:
    """Every request's verified payload, in arrival order (failed attempts included)."""
    assert all(r.verify_error is None for r in hook.received)
    return [r.payload for r in hook.received]


def champions(hook: Receiver) -> list[tuple[str, str]]:
    return [(p["data"]["model"], p["data"]["version"]) for p in received(hook)]


def test_a_retried_alert_opened_reaches_the_receiver_before_its_alert_resolved(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    setup_model(client, auth)
    monitor = {
        "model": "m",
        "signal": "refusal_rate",
        "dimension": "all",
        "band": {"type": "fixed", "high": 0.01},
    }
    assert client.put("/api/v1/monitors", json=monitor, headers=auth).is_success
    post_events(client, auth, traffic(TOTAL - 1, 0.05, 3))
    secret = new_webhook_secret()
    with Receiver(secret) as hook:
        subscribe(client, auth, hook, secret, "alert.opened", "alert.resolved")
        # The pager is down when the alert opens, and asks for a wait no drain outlasts (the
        # backoff alone is full jitter: it may be over before the next drain).
        hook.will_reply(Reply(500, headers={"Retry-After": "3600"}))
        assert run(client, auth, TOTAL - 1)["alerts_opened"] == 1
        [alert] = client.get("/api/v1/alerts", headers=auth).json()["items"]
        drain(app, settings)
        hook.will_reply(Reply(200))  # back up; the opened one waits for its backoff
        resolved = client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=auth)
        assert resolved.status_code == 200
        drain(app, settings)
        make_due_now(app)
        drain(app, settings)

        payloads = received(hook)
        assert [p["type"] for p in payloads] == ["alert.opened", "alert.opened", "alert.resolved"]
        assert {p["subject"] for p in payloads} == {f"alert:{alert['id']}"}
        opened, resolved_event = payloads[1:]
        assert opened["sequence"] < resolved_event["sequence"]


def test_a_failing_subject_does_not_hold_up_another_subjects_deliveries(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    secret = new_webhook_secret()
    with Receiver(secret) as hook:
        subscribe(client, auth, hook, secret, "champion.changed")
        hook.will_reply(Reply(503, headers={"Retry-After": "3600"}))  # outlasts the drains
        promote(client, auth, "a", "v1")
        drain(app, settings)
        hook.will_reply(Reply(200))
        promote(client, auth, "a", "v2")  # held behind a's v1, which is waiting to retry
        promote(client, auth, "b", "v1")  # another model: sent at once
        drain(app, settings)
        assert champions(hook) == [("a", "v1"), ("b", "v1")]

        make_due_now(app)
        drain(app, settings)
        assert champions(hook) == [("a", "v1"), ("b", "v1"), ("a", "v1"), ("a", "v2")]
        subjects = {p["data"]["model"]: p["subject"] for p in received(hook)}
        assert subjects["a"] != subjects["b"]


@pytest.mark.parametrize(
    ("status", "given_up", "attempts"),
    [(503, "dead", MAX_ATTEMPTS), (410, "failed", 1)],
    ids=["retries-exhausted", "refused"],
)
def test_a_given_up_delivery_lets_the_later_ones_of_its_subject_through(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    settings: Settings,
    status: int,
    given_up: str,
    attempts: int,
) -> None:
    secret = new_webhook_secret()
    with Receiver(secret) as hook:
        path = subscribe(client, auth, hook, secret, "champion.changed")
        hook.will_reply(Reply(status))
        promote(client, auth, "a", "v1")
        promote(client, auth, "a", "v2")
        for _ in range(attempts):  # one batch per attempt: the last one gives v1 up
            make_due_now(app)
            deliver_webhooks(app.state.sessionmaker, settings)
        assert champions(hook) == [("a", "v1")] * attempts  # v2 waited all along

        hook.will_reply(Reply(200))
        drain(app, settings)
        assert champions(hook)[attempts:] == [("a", "v2")]
        log = client.get(f"{path}/deliveries", headers=auth).json()["items"]
        by_version = {d["payload"]["data"]["version"]: d for d in log}
        assert (by_version["v1"]["status"], by_version["v1"]["attempts"]) == (given_up, attempts)
        assert (by_version["v2"]["status"], by_version["v2"]["attempts"]) == ("succeeded", 1)


def test_a_redelivered_old_event_keeps_its_sequence_so_the_receiver_can_drop_it(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    """A receiver that keeps, per subject, the event with the highest sequence ends with the
    newest champion even when an old event is sent again after the newer one."""
    secret = new_webhook_secret()
    with Receiver(secret) as hook:
        path = subscribe(client, auth, hook, secret, "champion.changed")
        promote(client, auth, "a", "v1")
        promote(client, auth, "a", "v2")
        drain(app, settings)
        log = client.get(f"{path}/deliveries", headers=auth).json()["items"]
        first = min(log, key=lambda delivery: delivery["id"])  # a's v1
        client.post(f"{path}/deliveries/{first['id']}/redeliver", headers=auth).raise_for_status()
        drain(app, settings)

        payloads = received(hook)
        assert champions(hook) == [("a", "v1"), ("a", "v2"), ("a", "v1")]
        assert len({payload["subject"] for payload in payloads}) == 1
        newest = {"sequence": 0, "version": ""}
        for payload in payloads:
            if payload["sequence"] > newest["sequence"]:
                newest = {"sequence": payload["sequence"], "version": payload["data"]["version"]}
        assert newest == {"sequence": payloads[1]["sequence"], "version": "v2"}
        assert payloads[2]["sequence"] == payloads[0]["sequence"] < payloads[1]["sequence"]
