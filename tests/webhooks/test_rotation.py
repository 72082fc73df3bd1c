"""Rotating an endpoint's signing secret: the new secret is shown once and stored encrypted,
the replaced one co-signs every delivery for the grace period (so a receiver holding either
verifies), then stops; the rotation is audited. The receiver is test_delivery's real one."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from standardwebhooks import Webhook

from app.core import crypto
from app.core.db import utcnow
from app.core.settings import Settings
from app.models import AuditLog, WebhookEndpoint
from app.webhooks.delivery import new_webhook_secret
from tests.webhooks.test_delivery import Receiver
from tests.webhooks.test_ordering import subscribe
from tests.webhooks.test_outbox import drain

Headers = dict[str, str]


def test_a_rotated_secret_is_shown_once_and_both_secrets_sign_during_the_grace_period(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    old_secret = new_webhook_secret()
    with Receiver(old_secret) as hook:
        path = subscribe(client, auth, hook, old_secret, "alert.opened")
        before = utcnow()
        rotated = client.post(f"{path}/rotate-secret", headers=auth)
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret.startswith("whsec_") and new_secret != old_secret
        grace_ends = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
        assert before + timedelta(hours=24) <= grace_ends <= utcnow() + timedelta(hours=24)
        shown = client.get(path, headers=auth).json()
        assert "secret" not in shown and new_secret not in str(shown)

        client.post(f"{path}/test", headers=auth).raise_for_status()
        drain(app, settings)
        [received] = hook.received
        assert received.verify_error is None  # the receiver still holding the old secret
        Webhook(new_secret).verify(received.body, received.headers)  # one holding the new
        assert received.headers["webhook-signature"].count("v1,") == 2

    with app.state.sessionmaker() as session:
        endpoint = session.scalars(select(WebhookEndpoint)).one()
        assert new_secret not in endpoint.secret_encrypted
        assert crypto.decrypt(settings, endpoint.secret_encrypted) == new_secret
        assert crypto.decrypt(settings, endpoint.previous_secret_encrypted or "") == old_secret
        [entry] = session.scalars(
            select(AuditLog).where(AuditLog.action == "webhook.secret_rotated")
        ).all()
        assert entry.target_id == str(endpoint.id)
        assert old_secret not in str(entry.details) and new_secret not in str(entry.details)


def test_after_the_grace_period_only_the_new_secret_signs(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    old_secret = new_webhook_secret()
    with Receiver(old_secret) as hook:
        path = subscribe(client, auth, hook, old_secret, "alert.opened")
        new_secret = client.post(f"{path}/rotate-secret", headers=auth).json()["secret"]
        with app.state.sessionmaker() as session:  # a day passes
            session.execute(update(WebhookEndpoint).values(previous_secret_expires_at=utcnow()))
            session.commit()

        client.post(f"{path}/test", headers=auth).raise_for_status()
        drain(app, settings)
        [received] = hook.received
        assert received.verify_error is not None  # the old secret no longer verifies
        Webhook(new_secret).verify(received.body, received.headers)
        assert received.headers["webhook-signature"].count("v1,") == 1


def test_rotating_again_within_the_grace_period_keeps_only_the_secret_just_replaced(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    first_secret = new_webhook_secret()
    with Receiver(first_secret) as hook:
        path = subscribe(client, auth, hook, first_secret, "alert.opened")
        second_secret = client.post(f"{path}/rotate-secret", headers=auth).json()["secret"]
        third_secret = client.post(f"{path}/rotate-secret", headers=auth).json()["secret"]

        client.post(f"{path}/test", headers=auth).raise_for_status()
        drain(app, settings)
        [received] = hook.received
        assert received.verify_error is not None  # the first secret signs no more
        for secret in (second_secret, third_secret):
            Webhook(secret).verify(received.body, received.headers)
