"""Webhook endpoints over the API and the outbox sender against real loopback receivers."""

from __future__ import annotations

import stat
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from standardwebhooks import Webhook

from app.core import crypto
from app.core.db import utcnow
from app.core.settings import Settings
from app.models import WebhookDelivery, WebhookEndpoint
from app.webhooks.delivery import MAX_ATTEMPTS, new_webhook_secret
from app.webhooks.sender import PAUSE_AFTER_FAILURES, deliver_webhooks
from tests.webhooks.receiver import receiver

Headers = dict[str, str]


def send_due(app: FastAPI, settings: Settings) -> None:
    """Moves every retry to now, then runs the sender until it finds nothing due."""
    with app.state.sessionmaker() as session:
        session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))
        session.commit()
    while deliver_webhooks(app.state.sessionmaker, settings):
        pass


def test_secret_is_shown_once_stored_encrypted_and_signs_the_test_send(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    secret = new_webhook_secret()
    with receiver() as hook:
        created = client.post(
            "/api/v1/webhooks",
            json={"url": hook.url, "events": ["alert.opened"], "secret": secret},
            headers=auth,
        )
        assert created.status_code == 201, created.text
        webhook = created.json()
        assert webhook["secret"] == secret
        shown = client.get(f"/api/v1/webhooks/{webhook['id']}", headers=auth)
        assert "secret" not in shown.json() and secret not in shown.text
        with app.state.sessionmaker() as session:
            stored = session.scalar(select(WebhookEndpoint.secret_encrypted))
        assert stored is not None and secret not in stored
        assert crypto.decrypt(settings, stored) == secret

        queued = client.post(f"/api/v1/webhooks/{webhook['id']}/test", headers=auth)
        assert queued.status_code == 202 and queued.json()["status"] == "pending"
        send_due(app, settings)
        [(headers, body)] = hook.requests
        assert Webhook(secret).verify(body, headers)["type"] == "webhook.test"
        [delivery] = client.get(
            f"/api/v1/webhooks/{webhook['id']}/deliveries", headers=auth
        ).json()["items"]
        assert delivery["status"] == "succeeded" and delivery["last_status_code"] == 200
        assert delivery["last_response_excerpt"] == "ok"


def test_bad_targets_and_secrets_are_refused_by_field(client: TestClient, auth: Headers) -> None:
    for url in ("http://169.254.169.254/latest", "ftp://127.0.0.1/x", "not a url"):
        response = client.post(
            "/api/v1/webhooks", json={"url": url, "events": ["alert.opened"]}, headers=auth
        )
        assert response.status_code == 422, url
        assert response.json()["detail"].startswith("url")
    weak = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/", "events": ["alert.opened"], "secret": "whsec_c2hvcnQ="},
        headers=auth,
    )
    assert weak.status_code == 422 and weak.json()["detail"].startswith("secret")
    unknown_event = client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["x"]}, headers=auth
    )
    assert unknown_event.status_code == 422


def test_dead_letter_pause_redeliver_and_reenable(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    with receiver(fail_first=10_000) as down:
        webhook = client.post(
            "/api/v1/webhooks", json={"url": down.url, "events": ["alert.opened"]}, headers=auth
        ).json()
        path = f"/api/v1/webhooks/{webhook['id']}"
        first = client.post(f"{path}/test", headers=auth).json()
        for _ in range(MAX_ATTEMPTS):
            send_due(app, settings)
        log = client.get(f"{path}/deliveries", headers=auth).json()["items"]
        assert [(d["status"], d["attempts"]) for d in log] == [("dead", MAX_ATTEMPTS)]
        assert log[0]["last_status_code"] == 503
        assert log[0]["last_response_excerpt"] == "down for maintenance"

        client.post(f"{path}/test", headers=auth)
        for _ in range(PAUSE_AFTER_FAILURES - MAX_ATTEMPTS):
            send_due(app, settings)
        paused = client.get(path, headers=auth).json()
        assert paused["status"] == "paused" and "failed attempts" in paused["paused_reason"]

        again = client.post(f"{path}/deliveries/{first['id']}/redeliver", headers=auth)
        assert again.status_code == 202 and again.json()["status"] == "pending"
        down.fail_first = 0  # the receiver is back
        send_due(app, settings)  # paused: nothing is sent
        assert down.requests == []
        enabled = client.patch(path, json={"status": "active"}, headers=auth).json()
        assert enabled["status"] == "active" and enabled["consecutive_failures"] == 0
        send_due(app, settings)
        assert [h["webhook-id"] for h, _ in down.requests] == [first["msg_id"]]
    assert client.delete(path, headers=auth).status_code == 204
    assert client.get(path, headers=auth).status_code == 404


def test_a_generated_server_key_is_private_and_stable(tmp_path: Path) -> None:
    settings = Settings(secret_key=None, data_dir=tmp_path / "data")
    token = crypto.encrypt(settings, "whsec_x")
    key_file = tmp_path / "data" / crypto.SECRET_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert crypto.decrypt(Settings(secret_key=None, data_dir=tmp_path / "data"), token) == "whsec_x"
